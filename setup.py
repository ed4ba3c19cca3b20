from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [line.strip() for line in (here / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]

setup(
    name="bitmind",
    version="0.3.0",
    description="Miner and validator for Bittensor's AI-generated image detection subnet (SN34 design)",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bitmind", "bitmind.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={"test": ["pytest>=8", "hypothesis>=6", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"]},
    entry_points={"console_scripts": ["bitmind-eval=bitmind.eval:main", "bitmind-download-data=bitmind.download_data:main"]},
)

// pm2 ecosystem file: the miner as the operator's guide runs it (README, "Running a
// miner"; docs/Mining.md).
//
//   source .venv/bin/activate          # so that "python3" below is the venv's interpreter
//   pm2 start ecosystem.config.js      # same as the long `pm2 start ./neurons/miner.py ...` line
//   pm2 logs miner | pm2 restart miner | pm2 stop miner | pm2 delete miner
//
// Testnet (netuid 168) is shown; for mainnet use "--netuid", "34" and drop the two
// "--subtensor.network", "test" items. Set your wallet and port in MINER_ARGS.
// pm2 resolves "python3" from PATH when you run `pm2 start`; without an activated venv,
// set interpreter to the venv's python (e.g. `${__dirname}/.venv/bin/python`).
const path = require("path");

const MINER_ARGS = [
  // the link README step 4 makes (mining_models/local/ is ignored by git; step 7 re-points it)
  "--neuron.model_path", "./mining_models/local/current.pth",
  "--netuid", "168",
  "--subtensor.network", "test",
  "--wallet.name", "default",
  "--wallet.hotkey", "default",
  "--axon.port", "8091",
];

module.exports = {
  apps: [
    {
      name: "miner",
      script: "neurons/miner.py",
      args: MINER_ARGS,
      interpreter: "python3",
      cwd: __dirname,                 // the repository, wherever pm2 is started from
      // Restart policy: a crash or a failed start (e.g. the chain endpoint unreachable,
      // exit status 1) restarts with a growing delay; exit status 2 (model file missing or
      // unservable) and 3 (hotkey not registered) need the operator, so they stop the
      // app instead of restarting it in a loop (docs/Mining.md, "Exit status").
      autorestart: true,
      stop_exit_codes: [2, 3],
      exp_backoff_restart_delay: 1000,
      min_uptime: "60s",
      // pm2 gives up after max_restarts starts in a row that die within min_uptime; at the
      // 15 s cap of the delay, 10 would leave the miner down for good after a chain outage
      // of about a minute. 100000 keeps retrying for about 17 days.
      max_restarts: 100000,
      // pm2 stop/restart send SIGINT; the miner stops its axon and exits 0 within a few
      // seconds. Give it time before pm2 falls back to SIGKILL.
      kill_timeout: 30000,
      // Log files (`pm2 logs miner` follows them); bt.logging prints its own timestamps.
      out_file: path.join(__dirname, "logs", "miner.out.log"),
      error_file: path.join(__dirname, "logs", "miner.err.log"),
      merge_logs: true,
      env: {
        PYTHONUNBUFFERED: "1",        // log lines reach pm2 as they are written
      },
    },

    // The validator (docs/Validator.md). Uncomment, set its wallet and data, then
    // `pm2 start ecosystem.config.js --only validator`.
    // {
    //   name: "validator",
    //   script: "neurons/validator.py",
    //   args: [
    //     "--netuid", "168",
    //     "--subtensor.network", "test",
    //     "--wallet.name", "validator",
    //     "--wallet.hotkey", "default",
    //     "--neuron.data", "../shared/data/sn34-mini",
    //   ],
    //   interpreter: "python3",
    //   cwd: __dirname,
    //   autorestart: true,
    //   stop_exit_codes: [2, 3],     // 2: challenge data unreadable, 3: hotkey not registered
    //   exp_backoff_restart_delay: 1000,
    //   min_uptime: "60s",
    //   max_restarts: 100000,
    //   kill_timeout: 30000,
    //   out_file: path.join(__dirname, "logs", "validator.out.log"),
    //   error_file: path.join(__dirname, "logs", "validator.err.log"),
    //   merge_logs: true,
    //   env: { PYTHONUNBUFFERED: "1" },
    // },
  ],
};

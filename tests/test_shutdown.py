"""Neurons stop gracefully on SIGINT/SIGTERM (bitmind.shutdown)."""


def test_stop_event_on_signals_sets_the_event_and_reports_the_signal():
    import os
    import signal

    from bitmind.shutdown import stop_event_on_signals

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []
    try:
        stop = stop_event_on_signals(seen.append)
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5) and seen == [signal.SIGTERM]
    finally:
        for s, h in old.items():
            signal.signal(s, h)

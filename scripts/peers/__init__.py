"""The peers of ``scripts/bench_peers.py``: small LitServe and Ray Serve servers around clipq's own
encoder and decoder, the load client every system gets, and how each system is started."""

"""Send-to-issued latency: POST .../send answering 202 to the issued history row, minus the platform call.

Run with ``python -m bench.send_latency``; see ``bench/send_latency/__main__.py``.
"""

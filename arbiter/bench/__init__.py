"""`arbiter bench`: synthetic WebRTC participants and the benchmark report (issue 5)."""

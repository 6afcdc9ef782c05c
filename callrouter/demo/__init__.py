"""`callrouter demo`: the daemon with a built-in PBX simulator and sample data.

- `pbx.py` — an AMI server and FastAGI caller replaying recorded Asterisk calls (shipped in
  `scenarios/`) with fresh ids and current times;
- `seed.py` — sample managers and clients (pure);
- `run.py` — the store, the tokens, the daemon and the traffic in one TaskGroup.
"""

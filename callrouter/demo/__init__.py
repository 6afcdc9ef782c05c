"""`callrouter demo`: the daemon with a built-in PBX simulator and sample data.

- `pbx.py` — an AMI server and FastAGI caller replaying recorded Asterisk calls (shipped in
  `scenarios/`) with fresh ids and current times, the manager who rings remapped, the
  router's answer in the channel variables;
- `seed.py` — sample managers and clients, and which caller fits which recording (pure);
- `run.py` — the store, the tokens, the daemon and the traffic in one TaskGroup;
- `rules/` — the shipped rules (copies of the checkout's `rules/`) with an always-open calendar.
"""

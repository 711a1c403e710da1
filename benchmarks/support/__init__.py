"""What the benchmark scripts share; imported as ``support`` (scripts run from benchmarks/).

- :mod:`.bench_run`: a run's private topics, Redis keys, scratch directory and
  server config on the local stack (``loopline up``);
- :mod:`.server`: the real serving command started, scraped and stopped;
- :mod:`.clients`: Predict requests, the one-client loop and load generators;
- :mod:`.models`: 200-tree models trained by the trainer on simulated history;
- :mod:`.secure`: the serving measurement plaintext vs TLS + a bearer token;
- :mod:`.rollout_metrics`, :mod:`.rollout_plans`: the rollout benchmark's
  figures and its plans driven through the CLI.
"""

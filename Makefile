# Benchmarks (see benchmarks/README.md). Tests and the stack have their own scripts: scripts/test, scripts/aimeter.
.PHONY: bench bench-smoke bench-journal bench-metrics bench-limits bench-scale drill

bench:  ## full run (~25 min): writes benchmarks/results/{results.json,results.md,chart.png}; then the metrics' cost
	BENCH_COMMAND="make bench" benchmarks/run.sh
	$(MAKE) bench-metrics
	$(MAKE) bench-limits

bench-smoke:  ## <1 min, tiny counts, results in a temp dir (what CI runs through the smoke test)
	BENCH_COMMAND="make bench-smoke" benchmarks/run.sh --smoke

bench-journal:  ## the gateway journal's CPU per event on the publish path (budget: 5 us), pinned to core 1
	taskset -c 1 .venv/bin/python -m benchmarks.journal_micro

bench-metrics:  ## the gateway's Prometheus updates, CPU per request (budget: 3 us), pinned to core 1
	taskset -c 1 .venv/bin/python -m benchmarks.metrics_micro

bench-limits:  ## ~4 min: rate-limit and budget checks, CPU per request (budget check target: 5 us), micro then gateway A/B
	taskset -c 1 .venv/bin/python -m benchmarks.ratelimit_micro
	taskset -c 1 .venv/bin/python -m benchmarks.budget_check
	.venv/bin/python -m benchmarks.limits_compare --out benchmarks/results/limits_compare.json

bench-scale:  ## not in CI (~45 min, ~7 GB at 100M): 1M/10M/100M events, raw FINAL vs the hourly rollups -> benchmarks/results/scale.{md,json,svg}
	.venv/bin/python -m benchmarks.scale --root $${BENCH_SCALE_DIR:-/tmp/aimeter-bench-scale}
	.venv/bin/python -m benchmarks.scale_chart benchmarks/results/scale.json benchmarks/results/scale.svg

drill:  ## ~5 min, as root: 3-node Kafka, 2 gateways on network namespaces, 2 pricers; kills and a cut-off under load -> benchmarks/results/drill.{md,json}
	nice -n 15 .venv/bin/python -m benchmarks.drill --root $${DRILL_DIR:-/tmp/aimeter-drill} --out benchmarks/results

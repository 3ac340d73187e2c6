"""Load-testing tools of seckill: a reference server, a benchmark, and a Locust scenario."""

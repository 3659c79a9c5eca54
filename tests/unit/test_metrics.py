"""The metrics' bookkeeping: exposition through prometheus-client, and counting on from an earlier process."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hoshikage.metrics import LATENCY_BUCKETS, Metrics


def samples(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_new_process_counts_on_from_the_figures_the_last_one_left():
    first = Metrics()
    first.count("hoshikage_requests", ("/v1/chat/completions", "200"), 3)
    first.count("hoshikage_cold_starts")
    for seconds in (0.04, 0.3, 0.3, 400.0):
        first.observe("hoshikage_request_duration_seconds", ("/v1/chat/completions",), seconds)
    first.running = False
    left = first.render().decode()

    second = Metrics()
    second.restore(left)
    second.count("hoshikage_cold_starts")
    second.count("hoshikage_requests", ("/v1/chat/completions", "200"))
    second.observe("hoshikage_request_duration_seconds", ("/v1/chat/completions",), 0.3)
    now = samples(second.render().decode())
    route = ("endpoint", "/v1/chat/completions")
    assert now[("hoshikage_requests_total", (route, ("status", "200")))] == 4
    assert now[("hoshikage_cold_starts_total", ())] == 2
    assert now[("hoshikage_request_duration_seconds_count", (route,))] == 5
    assert abs(now[("hoshikage_request_duration_seconds_sum", (route,))] - 400.94) < 1e-9
    assert now[("hoshikage_request_duration_seconds_bucket", (route, ("le", "0.05")))] == 1
    assert now[("hoshikage_request_duration_seconds_bucket", (route, ("le", "0.5")))] == 4
    assert now[("hoshikage_request_duration_seconds_bucket", (route, ("le", "300.0")))] == 4
    assert now[("hoshikage_request_duration_seconds_bucket", (route, ("le", "+Inf")))] == 5
    assert now[("hoshikage_running", ())] == 1


def test_live_figures_come_from_the_pool_and_its_part_of_a_counter_adds_to_what_was_carried():
    live = {"hoshikage_model_loaded": {("gemma",): 1.0}, "hoshikage_queue_depth": {("gemma",): 2.0},
            "hoshikage_prompt_cache_reused_tokens": {("gemma",): 100.0}}
    metrics = Metrics(live=lambda: live)
    metrics.count("hoshikage_prompt_cache_reused_tokens", ("gemma",), 50)  # carried from the last process
    now = samples(metrics.render().decode())
    assert now[("hoshikage_model_loaded", (("model", "gemma"),))] == 1
    assert now[("hoshikage_queue_depth", (("model", "gemma"),))] == 2
    assert now[("hoshikage_prompt_cache_reused_tokens_total", (("model", "gemma"),))] == 150


def test_histograms_written_with_other_buckets_start_afresh():
    other = "\n".join([
        "# TYPE hoshikage_request_duration_seconds histogram",
        'hoshikage_request_duration_seconds_bucket{endpoint="/x",le="1.0"} 3',
        'hoshikage_request_duration_seconds_bucket{endpoint="/x",le="+Inf"} 3',
        'hoshikage_request_duration_seconds_count{endpoint="/x"} 3',
        'hoshikage_request_duration_seconds_sum{endpoint="/x"} 1.5', ""])
    metrics = Metrics()
    metrics.restore(other)
    assert ("hoshikage_request_duration_seconds_count", (("endpoint", "/x"),)) not in samples(
        metrics.render().decode())
    assert len(LATENCY_BUCKETS) > 2

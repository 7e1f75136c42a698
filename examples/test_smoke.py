"""The smallest integration test: three simulated carriers (the plugin's default scenario),
one round, a typed frame back."""


def test_a_round_over_simulated_carriers(operator_client):
    frame = operator_client.run("enrollment.member_months", "2026-01:2026-03")
    assert frame.attrs["state"] == "complete"

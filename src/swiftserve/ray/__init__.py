"""swiftserve on Ray Serve: the optional `swiftserve[ray]` extra (README, "Beyond one machine").

Each replica of one Ray Serve deployment is a whole multi-model swiftserve (replica.py, the same
router and OpenAI app as `swiftserve launch`); a thin ingress (ingress.py) speaks the OpenAI API
and relays each request to the replica where its model is resident (routing.py, the rule as pure
code; request_router.py, Ray's extension point that applies it). The core never imports this
package (tests/test_layering.py); only the CLI does, for `swiftserve launch --ray`.
Modules that import `ray` say so in their docstring; routing.py, autoscale.py, groups.py and
replica_config.py do not, so they are tested without it.
"""

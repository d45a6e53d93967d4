"""Routing of cache misses to engines. One concept per module:

config          RoutingConfig (nested into Settings as ``settings.routing``)
backends        BackendPool: engines, active probes (/health, /v1/models, /metrics)
breaker         CircuitBreaker per engine (passive health)
engine_metrics  vLLM /metrics text -> EngineLoad
affinity        prefix keys and rendezvous hashing
balancer        Balancer.choose -> RouteDecision (engine + why)
upstream        Upstream: failover before the first byte (tenacity), streaming relay
admission       Admission.slot: bounded in-flight per model + bounded queue -> 429
ratelimit       RateLimiter: per-API-key requests/tokens per minute -> 429 (in-process)
redis_limits    SharedLimiter: the same buckets in Redis, shared by replicas (Lua scripts)
tokens, budget  prompt token counting; TokenBudget: max_tokens clamp, too-long prompt -> 400
coalesce        Coalescer: keyed single-flight with broadcast of streamed events
shared_flight   SharedFlights: the same single flight across replicas (Redis lease + answer)
discovery       PublishedEngines: the pool follows the engine list `engine pool` publishes
dns_discovery   DnsEngines: dns://name:port backends, every address an engine (re-resolved)
errors          routing's refinements of gateway.errors
"""

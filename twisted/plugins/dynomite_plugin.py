from twisted.application.service import ServiceMaker

dynomite = ServiceMaker(
    "dynomite", "dynomite.tap", "A Dynamo layer for Redis (Dynomite-compatible node)", "dynomite"
)

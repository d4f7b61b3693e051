# The whole plugin is this one statement: twistd imports every plugin file
# when it scans for commands, so the real work lives in echotwist.tap and is
# imported only when someone runs "twistd echo".
from twisted.application.service import ServiceMaker

echo = ServiceMaker(
    "echotwist",
    "echotwist.tap",
    "An RFC 862 echo server: everything a client sends comes back.",
    "echo",
)

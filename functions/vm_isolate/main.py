"""vm_isolate: a compromised VM that must be cut off from the network."""

from shared.function import event_function
from shared.schemas import VmIsolate

vm_isolate = event_function(VmIsolate)

"""service_down: a service that stopped and should be restarted."""

from shared.function import event_function
from shared.schemas import ServiceDown

service_down = event_function(ServiceDown)

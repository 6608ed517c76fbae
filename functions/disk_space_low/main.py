"""disk_space_low: a file system that is running out of space."""

from shared.function import event_function
from shared.schemas import DiskSpaceLow

disk_space_low = event_function(DiskSpaceLow)

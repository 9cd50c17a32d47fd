"""Data sources with an offline mirror."""
from .sources import (MIRROR_ENV, ROOT_ENV, SOURCES, DataSourceError,
                      check_task_dataset, data_mirror, data_root, get_source,
                      load_dataset)

__all__ = ["load_dataset", "get_source", "check_task_dataset", "data_root",
           "data_mirror", "DataSourceError", "SOURCES", "ROOT_ENV", "MIRROR_ENV"]

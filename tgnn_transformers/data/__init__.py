"""Data sources with an offline mirror."""
from .sources import (MIRROR_ENV, ROOT_ENV, SOURCES, TEXT_FILE_PREFIX,
                      DataSourceError, check_dataset, data_mirror,
                      data_root, dataset_key, datasets_of, get_source,
                      load_dataset)
from .corpus import CORPORA, CharCorpus, CharVocabulary, load_corpus
from .encodings import encoding_cache_path, positional_encodings
from .text import (TEXT_DATASETS, SentenceGraphDataset, TextSplits,
                   Vocabulary, load_text_splits, read_text_split)

__all__ = ["load_dataset", "get_source", "check_dataset", "datasets_of",
           "dataset_key", "TEXT_FILE_PREFIX", "data_root",
           "data_mirror", "DataSourceError", "SOURCES", "ROOT_ENV", "MIRROR_ENV",
           "TEXT_DATASETS", "SentenceGraphDataset", "TextSplits",
           "Vocabulary", "load_text_splits", "read_text_split", "CORPORA",
           "CharCorpus", "CharVocabulary", "load_corpus",
           "positional_encodings", "encoding_cache_path"]

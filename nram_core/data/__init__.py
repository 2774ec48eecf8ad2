"""MIND data: parsing, layouts, tokenising, caching, batching, downloading and safe unzipping."""
from .mind import FileReport, parse_time, read_behaviors, read_news
from .layout import Layout, resolve_layout
from .split import Corpus, News, Split, load_corpus, load_split
from .text import Vocab, load_glove, tokenize

__all__ = ["Corpus", "FileReport", "Layout", "News", "Split", "Vocab", "load_corpus", "load_glove",
           "load_split", "parse_time", "read_behaviors", "read_news", "resolve_layout", "tokenize"]

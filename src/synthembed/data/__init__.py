"""Training records: synthetic examples and labeled sets become (instructed query, positive, hard
negative)."""

from synthembed.data.records import TrainRecord, read_records

__all__ = ["TrainRecord", "read_records"]

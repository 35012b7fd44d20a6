"""What a run writes: layouts, formats, targets, the record, merge, pictures."""

"""``fghash explain``: which visual attribute each bit follows, with grids, statistics and sheets."""

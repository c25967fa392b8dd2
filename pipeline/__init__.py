"""alertfeed: emergency alerts into social feeds."""

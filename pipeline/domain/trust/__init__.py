"""Who may interrupt feeds: signed CAP against pinned anchors, the authority registry."""

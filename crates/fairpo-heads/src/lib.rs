//! Per-label MLP heads (being implemented).

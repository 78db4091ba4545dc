//! Hostile suite, second pass: guest-controlled strings (log records, error values, rejected kinds, init errors) are truncated, escaped and budgeted before they reach the log or the bus.

//! Hostile suite, second pass: guests that wait inside host calls (sleep, poll, block) are bounded by their deadline, never starve the others, and never hold up shutdown.

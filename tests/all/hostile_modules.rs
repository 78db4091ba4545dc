//! Hostile suite, second pass: module files that are not regular files, too large, or too costly to compile are refused with a clear error, and never delay the other agents.

//! `toka bench`: the performance scenarios (the harness is in
//! [`crate::bench`]), and the hidden `__bench-child` they run some
//! scenarios in.

pub(crate) use crate::bench::{BenchArgs, ChildArgs};

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::bench::run(args)
}

pub(crate) fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    crate::bench::run_child(args)
}

//! `wasi:io/poll` with every wait bounded by the calling instance's deadline,
//! linked over wasmtime-wasi's own. The mechanism (deadline, stand-in
//! workers, the cap on waiting guests) is the seam's, in
//! [`toka_capability::wait`], shared with every capability that waits.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

pub use toka_capability::wait::*;

/// `wasi:io/poll` with every wait bounded; linked over wasmtime-wasi's own.
#[derive(Debug)]
pub struct BoundedPoll<'a> {
    /// The instance's resource table (the pollables live there).
    pub table: &'a mut ResourceTable,
    /// The deadline of the call in progress.
    pub wait: &'a WaitState,
}

/// The [`wasmtime::component::HasData`] marker for [`BoundedPoll`].
#[derive(Debug)]
pub struct Poll;

impl wasmtime::component::HasData for Poll {
    type Data<'a> = BoundedPoll<'a>;
}

impl poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let wait = async_poll::Host::poll(&mut *self.table, pollables);
        bounded(self.wait, "wasi:io/poll.poll", wait)?
    }
}

impl poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Polls once and returns: no wait to bound.
        wasmtime_wasi::runtime::in_tokio(async_poll::HostPollable::ready(
            &mut *self.table,
            pollable,
        ))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let wait = async_poll::HostPollable::block(&mut *self.table, pollable);
        bounded(self.wait, "wasi:io/poll.[method]pollable.block", wait)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

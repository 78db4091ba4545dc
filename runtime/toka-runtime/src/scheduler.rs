//! The scheduler: `toka.tick` every `scheduler_tick_ms` to agents subscribed
//! to it, and each agent with its own `every` period ticked on its own timer.
//!
//! Tick payloads are the tick's sequence number (from 1) as 8 little-endian
//! bytes. Missed ticks (a stalled host) are skipped, not burst, so a host
//! catching up does not flood every mailbox.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use toka_core::event::kinds;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

use crate::bus::{Bus, SubscriberId};

/// Who gets ticks at which period.
#[derive(Debug, Clone, Default)]
pub(crate) struct TickPlan {
    pub(crate) global: Duration,
    /// Agents with their own period, grouped by period.
    pub(crate) own: BTreeMap<Duration, Vec<SubscriberId>>,
}

/// Start the tick timers; they stop when `stop` turns true.
pub(crate) fn spawn(bus: Bus, plan: TickPlan, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![timer(plan.global, stop.clone(), {
        let bus = bus.clone();
        move |n| {
            bus.publish_system(kinds::TICK, Bytes::copy_from_slice(&n.to_le_bytes()));
        }
    })];
    for (period, subscribers) in plan.own {
        let bus = bus.clone();
        tasks.push(timer(period, stop.clone(), move |n| {
            for &to in &subscribers {
                bus.send_to(to, kinds::TICK, Bytes::copy_from_slice(&n.to_le_bytes()));
            }
        }));
    }
    tasks
}

fn timer(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    mut fire: impl FnMut(u64) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // The first tick of `interval` fires at once; ticks start one period in.
        ticks.tick().await;
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    n += 1;
                    fire(n);
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

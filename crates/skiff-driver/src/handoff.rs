//! Leadership hand-off requests: `transferLeadership()` calls and a leader's `stop()` that
//! hands off first, each bounded by a deadline (one election timeout).

/// Invariant: `waiting` and `stop` are only set while a transfer to `target` was asked of the
/// core; they are answered once `target` leads, or at their deadline.
#[derive(Debug, Default)]
pub struct Handoff {
    /// The voter leadership is being handed to.
    target: Option<String>,
    /// `transferLeadership()` calls: (request, deadline).
    waiting: Vec<(u32, u64)>,
    /// A `stop()` that waits for the hand-off: (request, deadline).
    stop: Option<(u32, u64)>,
}

/// What became of the hand-off at this moment.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled {
    /// Requests to answer with success (the target leads).
    pub done: Vec<u32>,
    /// Requests whose deadline passed.
    pub timed_out: Vec<u32>,
    /// The stop to carry out now (the hand-off finished or ran out of time).
    pub stop: Option<u32>,
}

impl Handoff {
    pub fn begin(&mut self, target: String) {
        if self.target.as_deref() != Some(target.as_str()) {
            self.target = Some(target);
        }
    }

    pub fn wait(&mut self, req: u32, deadline: u64) {
        self.waiting.push((req, deadline));
    }

    pub fn wait_to_stop(&mut self, req: u32, deadline: u64) {
        self.stop = Some((req, deadline));
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.stop.is_none()
    }

    /// `leader` is who this node follows now (`None`: no one, or itself).
    pub fn settle(&mut self, now: u64, leader: Option<&str>) -> Settled {
        let led = leader.is_some_and(|l| self.target.as_deref() == Some(l));
        let mut out = Settled { done: Vec::new(), timed_out: Vec::new(), stop: None };
        let waiting = std::mem::take(&mut self.waiting);
        for (req, deadline) in waiting {
            if led {
                out.done.push(req);
            } else if now >= deadline {
                out.timed_out.push(req);
            } else {
                self.waiting.push((req, deadline));
            }
        }
        // A stopping node goes as soon as anyone else leads: the cluster is served again.
        if let Some((req, deadline)) = self.stop {
            if leader.is_some() || now >= deadline {
                self.stop = None;
                out.stop = Some(req);
            }
        }
        if self.is_idle() {
            self.target = None;
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.waiting.iter().map(|(_, d)| *d).chain(self.stop.map(|(_, d)| d)).min()
    }

    /// Every request waiting (the node stops).
    pub fn clear(&mut self) -> Vec<u32> {
        self.target = None;
        std::mem::take(&mut self.waiting).into_iter().map(|(req, _)| req).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_finish_when_the_target_leads_or_time_out() {
        let mut h = Handoff::default();
        h.begin("b".into());
        h.wait(1, 100);
        h.wait(2, 10);
        let s = h.settle(20, None);
        assert_eq!((s.done, s.timed_out, s.stop), (vec![], vec![2], None));
        let s = h.settle(30, Some("c"));
        assert!(s.done.is_empty(), "another leader is not the target");
        let s = h.settle(40, Some("b"));
        assert_eq!(s.done, vec![1]);
        assert!(h.is_idle());
    }

    #[test]
    fn a_stop_goes_once_anyone_else_leads_or_at_its_deadline() {
        let mut h = Handoff::default();
        h.begin("b".into());
        h.wait_to_stop(7, 300);
        assert_eq!(h.settle(10, None).stop, None);
        assert_eq!(h.settle(20, Some("c")).stop, Some(7));
        h.wait_to_stop(8, 300);
        assert_eq!(h.settle(300, None).stop, Some(8));
    }
}

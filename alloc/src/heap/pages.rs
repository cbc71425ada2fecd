//! Free page runs in DRAM: best fit, coalescing on free.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(crate) struct PageRuns {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    free_pages: u64,
}

impl PageRuns {
    pub(crate) fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// Take `n` contiguous pages (best fit, lowest address among equals).
    pub(crate) fn take(&mut self, n: u64) -> Option<u64> {
        let &(len, start) = self.by_len.range((n, 0)..).next()?;
        self.by_len.remove(&(len, start));
        self.by_start.remove(&start);
        if len > n {
            self.by_start.insert(start + n, len - n);
            self.by_len.insert((len - n, start + n));
        }
        self.free_pages -= n;
        Some(start)
    }

    /// Return `[start, start+n)`, merging with free neighbours.
    pub(crate) fn give(&mut self, mut start: u64, mut n: u64) {
        debug_assert!(n > 0);
        self.free_pages += n;
        if let Some((&ps, &pl)) = self.by_start.range(..start).next_back()
            && ps + pl == start
        {
            self.by_start.remove(&ps);
            self.by_len.remove(&(pl, ps));
            start = ps;
            n += pl;
        }
        if let Some(&nl) = self.by_start.get(&(start + n)) {
            self.by_start.remove(&(start + n));
            self.by_len.remove(&(nl, start + n));
            n += nl;
        }
        self.by_start.insert(start, n);
        self.by_len.insert((n, start));
    }

    /// Iterate free runs (start, len) in address order.
    #[cfg(test)]
    pub(crate) fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_start.iter().map(|(&s, &l)| (s, l))
    }

    /// The longest free run, in pages.
    pub(crate) fn largest(&self) -> u64 {
        self.by_len.iter().next_back().map_or(0, |&(l, _)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_give_coalesce() {
        let mut r = PageRuns::default();
        r.give(0, 100);
        let a = r.take(10).unwrap();
        let b = r.take(20).unwrap();
        let c = r.take(70).unwrap();
        assert_eq!((a, b, c), (0, 10, 30));
        assert_eq!(r.take(1), None);
        r.give(b, 20);
        r.give(a, 10);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![(0, 30)]);
        r.give(c, 70);
        assert_eq!(r.runs().collect::<Vec<_>>(), vec![(0, 100)]);
        assert_eq!(r.free_pages(), 100);
        assert_eq!(r.largest(), 100);
    }

    #[test]
    fn best_fit() {
        let mut r = PageRuns::default();
        r.give(0, 5);
        r.give(10, 3);
        r.give(20, 8);
        assert_eq!(r.take(3), Some(10));
        assert_eq!(r.take(4), Some(0));
        assert_eq!(r.take(8), Some(20));
    }
}

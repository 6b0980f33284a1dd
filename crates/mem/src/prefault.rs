//! Pre-allocating and pre-faulting a copy destination ahead of a pause, so page
//! allocation (and, for hugetlb, page-table population) is paid while the guest
//! still runs and the copy inside the pause only moves bytes.
//!
//! Owns [`Region::prepare_destination`] and [`Prefault`]; never copies data.

use crate::{sys, DataRange, MemError, PageKind, Region};

/// What to allocate ahead of the copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Prefault {
    /// Nothing beyond what creation does (hugetlb regions are always committed).
    None,
    /// The whole region.
    #[default]
    All,
    /// Only these ranges (e.g. the source's `data_ranges()` before the pause):
    /// avoids allocating 4 KiB pages that the copy will never write.
    Ranges(Vec<DataRange>),
}

impl Region {
    /// Creates a destination for a copy and pays its allocation costs now:
    ///
    /// * 4 KiB: `fallocate` over the chosen ranges allocates the shmem pages (they
    ///   stay holes for `SEEK_DATA` until written, so the copy's result still
    ///   reports only what was copied).
    /// * hugetlb: the pages are committed at creation; here a writable shared
    ///   mapping is made and populated (`MADV_POPULATE_WRITE`) and kept for the
    ///   copy, so it takes no page fault. [`Region::seal`] drops it.
    ///
    /// Falls back to 4 KiB pages like [`Region::create`].
    pub fn prepare_destination(
        name: &str,
        size: u64,
        hugepages: bool,
        prefault: &Prefault,
    ) -> Result<Region, MemError> {
        let mut region = Region::create(name, size, hugepages)?;
        region.prefault(prefault)?;
        Ok(region)
    }

    /// Applies `prefault` to an existing region (see
    /// [`Region::prepare_destination`]).
    pub fn prefault(&mut self, prefault: &Prefault) -> Result<(), MemError> {
        let ranges = match prefault {
            Prefault::None => return Ok(()),
            Prefault::All => vec![DataRange {
                offset: 0,
                len: self.alloc_size(),
            }],
            Prefault::Ranges(r) => r.clone(),
        };
        let ranges = clip(&ranges, self.alloc_size(), self.kind().page_size());
        match self.kind() {
            PageKind::Small => {
                for r in &ranges {
                    sys::fallocate(self.memfd.as_fd(), 0, r.offset, r.len).map_err(|e| {
                        self.memfd
                            .io_err_with(format!("fallocate {}+{} (prefault)", r.offset, r.len), e)
                    })?;
                }
            }
            PageKind::Huge2M => {
                if self.map.is_none() {
                    let map = self
                        .map_writable()
                        .map_err(|e| self.memfd.io_err_with("mmap for prefault".into(), e))?;
                    self.map = Some(map);
                }
                let map = self.map.as_ref().expect("mapping set above");
                for r in &ranges {
                    map.populate_write(r.offset as usize, r.len as usize)
                        .map_err(|e| {
                            self.memfd.io_err_with(
                                format!("MADV_POPULATE_WRITE {}+{}", r.offset, r.len),
                                e,
                            )
                        })?;
                }
            }
        }
        tracing::debug!(
            name = self.name(),
            ranges = ranges.len(),
            "destination prefaulted"
        );
        Ok(())
    }
}

/// Clips `ranges` to `0..limit`, widening each to whole pages of `page` bytes.
fn clip(ranges: &[DataRange], limit: u64, page: u64) -> Vec<DataRange> {
    ranges
        .iter()
        .filter_map(|r| {
            let start = (r.offset / page) * page;
            let end = r
                .offset
                .saturating_add(r.len)
                .checked_next_multiple_of(page)?
                .min(limit);
            (end > start).then(|| DataRange {
                offset: start,
                len: end - start,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_widens_to_pages_and_drops_out_of_range() {
        let r = clip(
            &[
                DataRange {
                    offset: 10,
                    len: 10,
                },
                DataRange {
                    offset: 8192,
                    len: 1 << 20,
                },
                DataRange {
                    offset: 1 << 30,
                    len: 4096,
                },
            ],
            64 << 10,
            4096,
        );
        assert_eq!(
            r,
            vec![
                DataRange {
                    offset: 0,
                    len: 4096
                },
                DataRange {
                    offset: 8192,
                    len: (64 << 10) - 8192
                }
            ]
        );
    }

    #[test]
    fn small_prefault_allocates_without_creating_data() {
        let r =
            Region::prepare_destination("zygote-prefault-small", 1 << 20, false, &Prefault::All)
                .unwrap();
        assert_eq!(r.kind(), PageKind::Small);
        assert!(r.allocated_bytes().unwrap() >= 1 << 20);
        assert!(r.data_ranges().unwrap().is_empty());
    }
}

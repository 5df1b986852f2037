//! Pagination shared by every list: `page` from 1, `per_page` 1 to 100, and the page info that
//! answers carry.

use crate::Error;
use swarm_proto::common::v1 as pb;

/// The default page size.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// The largest page size.
pub const MAX_PER_PAGE: u32 = 100;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The page number, from 1.
    pub page: u32,
    /// Items per page, 1 to 100.
    pub per_page: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

impl Page {
    /// Validates a page and page size given explicitly (as REST query parameters are).
    pub fn new(page: u32, per_page: u32) -> Result<Self, Error> {
        if page == 0 {
            return Err(Error::invalid("page must be at least 1"));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(Error::invalid(format!(
                "per_page must be between 1 and {MAX_PER_PAGE}"
            )));
        }
        Ok(Self { page, per_page })
    }

    /// Reads a protobuf page request, where zero means "the default".
    pub fn from_proto(request: Option<pb::PageRequest>) -> Result<Self, Error> {
        let request = request.unwrap_or_default();
        let page = if request.page == 0 { 1 } else { request.page };
        let per_page = if request.per_page == 0 {
            DEFAULT_PER_PAGE
        } else {
            request.per_page
        };
        Self::new(page, per_page)
    }

    /// Returns the number of items to skip.
    pub fn offset(&self) -> i64 {
        (i64::from(self.page) - 1) * i64::from(self.per_page)
    }

    /// Returns the number of items to take.
    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }

    /// Describes this page within a list of `total` items.
    pub fn info(&self, total: u64) -> pb::PageInfo {
        pb::PageInfo {
            page: self.page,
            per_page: self.per_page,
            total,
            pages: total.div_ceil(u64::from(self.per_page)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_default_in_protobuf() {
        assert_eq!(Page::from_proto(None).unwrap(), Page::default());
    }

    #[test]
    fn out_of_range_page_sizes_are_refused() {
        assert!(Page::new(1, 0).is_err());
        assert!(Page::new(1, 101).is_err());
        assert!(Page::new(0, 20).is_err());
        assert_eq!(Page::new(3, 100).unwrap().offset(), 200);
    }

    #[test]
    fn info_counts_pages() {
        let info = Page::new(1, 20).unwrap().info(57);
        assert_eq!((info.total, info.pages), (57, 3));
        assert_eq!(Page::new(1, 20).unwrap().info(0).pages, 0);
    }
}

//! Listing pages (Keelvar's feed, Veridox's GET /files) and Link headers: never panic, and a
//! page's count adds up.
#![no_main]

use fetchdocs::fuzzing::{
    HeaderMap, HeaderValue, LINK, Url, decode_feed, decode_listing, next_link,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_feed(data);
    if let Ok(page) = decode_listing(data) {
        assert_eq!(page.found.len() + page.bad, page.entries);
        for f in &page.found {
            assert_eq!(f.id.get_version_num(), 7);
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, value);
        let page = Url::parse("https://my.keelvar.app/api/feeds/rfi-responses").unwrap();
        if let Some(Ok(next)) = next_link(&headers, &page) {
            assert!(!next.as_str().is_empty());
        }
    }
});

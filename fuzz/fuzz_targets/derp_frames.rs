//! DERP frames as the relay reads them: `FrameDecoder` fed in arbitrary chunks. Frames
//! come out within their type's length limit, nothing beyond one frame is buffered, and
//! every decoded frame encodes to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiscale_derp::frame::{FRAME_HEADER_LEN, FrameDecoder, max_payload_len};

fuzz_target!(|data: &[u8]| {
    let [n_sizes, rest @ ..] = data else {
        return;
    };
    let n_sizes = usize::from(*n_sizes % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n_sizes);
    let mut decoder = FrameDecoder::new();
    for chunk in oxiscale_fuzz::chunks(stream, sizes) {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let mut again = FrameDecoder::new();
                    again.feed(&frame.to_bytes());
                    assert_eq!(again.next_frame(), Ok(Some(frame)));
                    assert_eq!(again.buffered(), 0);
                }
                Ok(None) => {
                    if let Some(frame_type) = decoder.pending_frame_type() {
                        assert!(
                            decoder.buffered() < FRAME_HEADER_LEN + max_payload_len(frame_type)
                        );
                    }
                    break;
                }
                // The relay drops the connection: the stream is out of step.
                Err(_) => return,
            }
        }
    }
});

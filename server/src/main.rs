// mimalloc instead of glibc malloc: with many threads glibc keeps freed memory in per-thread
// arenas (64 MiB heaps), so RSS after a join wave or a reconnect storm stayed near its
// peak; mimalloc returns freed pages to the OS (see BENCHMARKS.md for the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    oxiscale::cli::main()
}

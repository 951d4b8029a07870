// Memories stored as f16 (`// #select f16` on): half the bytes per memory;
// every product and sum is computed in f32 after the load converts.
enable f16;
alias elem = f16;

// Memories stored as f32 (`// #select f16` off).
alias elem = f32;

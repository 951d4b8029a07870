// Below every score the host admits: it validates beta |x| |xi| < 1e30, so a
// masked or missing memory scored NEG never wins and exp(NEG - max) is 0.
const NEG: f32 = -3.0e38;

// Server ports on the destination function, one per scenario so a server left
// behind by one scenario can never answer another's clients. All below the
// ephemeral range (32768+) and away from qmesh's own 4433, 15000 and 15001.
export const PORTS = {
  s1Echo: 7001,
  s2Echo: 7002,
  s3Echo: 7003,
  s4Http: 7004,
  /** Chain relays take s5RelayBase + hop (1..5). */
  s5RelayBase: 7050,
  s6Sink: 7006,
  s7Echo: 7007,
  s8Echo: 7008,
  s9Sink: 7009,
} as const;

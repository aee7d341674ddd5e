// Every scenario of issue 3's table, in the order the run executes them.
import type { Scenario } from './scenario.js';
import { s1RttSlope } from './s1-rtt-slope.js';
import { s2ColdTunnel } from './s2-cold-tunnel.js';
import { s3Latency } from './s3-latency.js';
import { s4HttpRate } from './s4-http-rate.js';
import { s5Chain } from './s5-chain.js';
import { s6Bulk } from './s6-bulk.js';
import { s7ConnRate } from './s7-conn-rate.js';
import { s8IdleConns } from './s8-idle-conns.js';
import { s9LossyBulk } from './s9-lossy-bulk.js';

export const SCENARIOS: readonly Scenario[] = [s1RttSlope, s2ColdTunnel, s3Latency, s4HttpRate, s5Chain, s6Bulk, s7ConnRate, s8IdleConns, s9LossyBulk];

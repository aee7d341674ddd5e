// qmesh's PKI: one CA per trust domain (init-ca.ts) and short-lived host
// certificates it signs (issue-host.ts, sign-leaf.ts). The CLI's `qmesh pki`
// commands and the tests import from here.

export { initCa, trustDomainUri, type InitCaOptions, type InitCaResult } from './init-ca.js';
export { issueHost, hostNameProblem, caTrustDomain, DEFAULT_HOST_LIFETIME_MS, type IssueHostOptions, type IssueHostResult } from './issue-host.js';
export { signLeaf, parseCaCert, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, type SignLeafOptions, type SignedLeaf } from './sign-leaf.js';
export { CA_CERT_FILE, CA_KEY_FILE, KEY_MODE, CERT_MODE, DIR_MODE } from './pki-files.js';
export { x509, CLOCK_SKEW_MS } from './x509.js';

// Every failure qmesh reports on purpose is a QmeshError with a stable code;
// tests and operators match on the code, never on the message. The README's
// "Error codes" table lists each one (test/unit/errors.test.ts checks that).

export const ErrorCodes = {
  CONFIG: 'QMESH_ERR_CONFIG',
  TLS_FILES: 'QMESH_ERR_TLS_FILES',
  PKI: 'QMESH_ERR_PKI',
  IPTABLES: 'QMESH_ERR_IPTABLES',
  LISTEN: 'QMESH_ERR_LISTEN',
  ORIGINAL_DST: 'QMESH_ERR_ORIGINAL_DST',
  NO_ROUTE: 'QMESH_ERR_NO_ROUTE',
  TUNNEL_DOWN: 'QMESH_ERR_TUNNEL_DOWN',
  PEER_IDENTITY: 'QMESH_ERR_PEER_IDENTITY',
  STREAM_HEADER: 'QMESH_ERR_STREAM_HEADER',
  DESTINATION_DENIED: 'QMESH_ERR_DESTINATION_DENIED',
  SOURCE_DENIED: 'QMESH_ERR_SOURCE_DENIED',
  USAGE: 'QMESH_ERR_USAGE',
  TOPOLOGY: 'QMESH_ERR_TOPOLOGY',
  ADMIN_UNREACHABLE: 'QMESH_ERR_ADMIN_UNREACHABLE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class QmeshError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'QmeshError';
  }
}

export const isQmeshError = (err: unknown): err is QmeshError => err instanceof QmeshError;

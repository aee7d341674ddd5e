{
  "targets": [
    {
      "target_name": "qmesh_sockopt",
      "sources": ["daemon/native/sockopt.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "wgts_native",
      "sources": [
        "src/tun/native/addon.c",
        "src/tun/native/poll.c",
        "src/tun/native/tun.c",
        "src/tun/native/udp.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wshadow", "-Wvla"],
      "configurations": {
        "Release": {
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      }
    }
  ]
}

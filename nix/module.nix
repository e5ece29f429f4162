# NixOS module: services.flakegate runs flakegate as hardened systemd
# services, in one of three modes:
#
#   single-host    (default) one process, one unit `flakegate`: the blob
#                  server with its embedded gate and the authorization core
#                  (policies, tokens, token exchange) in process
#                  (blobserver -policies …).
#   embedded-gate  two units, `flakegate-blobserver` and `flakegate-authz`: the
#                  blob server serves clients and asks authz over gRPC before
#                  every request (-ext-authz), forwarding /_flakegate/ (token
#                  exchange) to authz's HTTP listener.
#   behind-envoy   the same two units; Envoy (envoy/envoy.yaml, not managed
#                  here) faces clients and asks authz; the blob server serves
#                  UNGATED on loopback.
#
# Secrets (the narinfo signing keys, the cache-token signing keys) are given
# as paths outside the Nix store and reach the services with systemd's
# LoadCredential: they are never copied into the world-readable store nor
# written into a unit. Without them, the services create their keys on first
# start in their state directories.
#
# Flag names are written once, in the *Flags sets below; renderFlags turns
# them into ExecStart arguments.
#
# test/nixos evaluates this module with the vendored nixpkgs lib and stub
# options for what it sets outside itself, and runs the real binaries with the
# generated arguments.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    types
    mkOption
    mkEnableOption
    mkIf
    literalExpression
    ;

  cfg = config.services.flakegate;
  storeDir = builtins.storeDir;

  # ---- systemd argument rendering -----------------------------------------

  # A value systemd must expand itself: %d is the unit's credentials
  # directory ($CREDENTIALS_DIRECTORY), where LoadCredential puts secrets.
  # credential "" is the directory itself.
  credential = id: { _credential = id; };

  # One value: literal text gets systemd's specifier (%) and variable ($)
  # characters doubled so that systemd passes them through unchanged.
  renderValue =
    v:
    if builtins.isAttrs v && v ? _credential then
      "%d" + lib.optionalString (v._credential != "") "/${v._credential}"
    else if builtins.isList v then
      lib.concatMapStringsSep "," renderValue v
    else if builtins.isBool v then
      lib.boolToString v
    else
      builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toString v);

  # { name = value; } -> "-name=value" arguments, each double-quoted for
  # systemd (toJSON escapes quotes and backslashes); null values are omitted.
  renderFlags =
    flags:
    lib.concatStringsSep " " (
      lib.mapAttrsToList (name: v: builtins.toJSON "-${name}=${renderValue v}") (
        lib.filterAttrs (_: v: v != null) flags
      )
    );

  # ---- option types -------------------------------------------------------

  secretPath = types.addCheck types.str (
    s: lib.hasPrefix "/" s && !lib.hasPrefix "${storeDir}/" s
  ) // {
    name = "secretPath";
    description = ''absolute path outside the Nix store, given as a string (e.g. "/run/secrets/flakegate-key"; a Nix path literal would be copied into the world-readable store)'';
  };

  flagValue = types.oneOf [
    types.str
    types.int
    types.bool
  ];

  # ---- derived values -----------------------------------------------------

  isLoopback =
    addr:
    lib.hasPrefix "127." addr || lib.hasPrefix "[::1]:" addr || lib.hasPrefix "localhost:" addr;
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  privilegedPort = portOf cfg.blobserver.listen < 1024;

  stateDirOf =
    dir: if lib.hasPrefix "/var/lib/" dir then lib.removePrefix "/var/lib/" dir else null;

  single = cfg.mode == "single-host";
  embedded = cfg.mode == "embedded-gate";
  envoy = cfg.mode == "behind-envoy";
  # The blob server faces clients itself (its public port is gated).
  servesClients = single || embedded;
  localAuthz = cfg.authz.enable && !single;

  extAuthz =
    if cfg.blobserver.extAuthz != null then
      cfg.blobserver.extAuthz
    else if embedded && localAuthz then
      cfg.authz.listen
    else
      null;
  authzHTTP =
    if cfg.blobserver.authzHTTP != null then
      cfg.blobserver.authzHTTP
    else if embedded && localAuthz then
      "http://${cfg.authz.httpListen}"
    else
      null;

  signingKeyIds = lib.imap0 (i: _: "signing-key-${toString i}") cfg.blobserver.signingKeyFiles;
  tokenKeyIds = lib.imap0 (i: _: "token-key-${toString i}.pem") cfg.authz.tokenKeyFiles;

  # The blob server's own flags, in every mode.
  blobFlags = {
    listen = cfg.blobserver.listen;
    "internal-listen" = cfg.blobserver.internalListen;
    "data-dir" = cfg.blobserver.dataDir;
    "signing-key-file" = if signingKeyIds == [ ] then null else map credential signingKeyIds;
    storage = cfg.blobserver.storage;
    index = cfg.blobserver.index;
    "tls-cert" = cfg.blobserver.tls.certFile;
    "tls-key" = cfg.blobserver.tls.keyFile;
  };
  # The embedded gate asking a separate authz.
  gateFlags = {
    "ext-authz" = extAuthz;
    "authz-http" = authzHTTP;
  };
  # No gate: Envoy's ext_authz in front checks every request (blobserver
  # refuses to serve ungated without saying so).
  envoyFlags = {
    "behind-envoy" = true;
  };

  etcDir = "/etc/flakegate";
  issuersPath = if cfg.authz.issuersFile != null then cfg.authz.issuersFile else "${etcDir}/issuers.yaml";
  policiesPath = "${etcDir}/policies";

  # The authorization core's flags: authz's, and the single-host blob
  # server's (authzapp.CoreFlags).
  coreFlags = {
    policies = policiesPath;
    issuers = issuersPath;
    "public-url" = cfg.publicURL;
    "token-keys" =
      if cfg.authz.tokenKeyFiles != [ ] then
        # The credentials directory itself: authz reads every *.pem there,
        # and only the token keys are named so (single-host: the signing
        # keys share it as signing-key-N).
        credential ""
      else
        "${if single then cfg.blobserver.dataDir else "/var/lib/flakegate-authz"}/token-keys";
  };
  # authz's listeners and where it finds the blob server's owners lookups.
  authzOnlyFlags = {
    listen = cfg.authz.listen;
    "http-listen" = cfg.authz.httpListen;
    "owners-url" = if cfg.blobserver.enable then "http://${cfg.blobserver.internalListen}" else null;
  };

  singleFlags = blobFlags // coreFlags // cfg.blobserver.extraFlags // cfg.authz.extraFlags;
  # Flags the module renders from its options: extraFlags may not set them
  # (an assertion), whatever the mode.
  overriddenFlags = lib.intersectLists (builtins.attrNames (blobFlags // gateFlags // envoyFlags // coreFlags // authzOnlyFlags)) (
    builtins.attrNames cfg.blobserver.extraFlags ++ builtins.attrNames cfg.authz.extraFlags
  );
  blobserverFlags =
    blobFlags // lib.optionalAttrs embedded gateFlags // lib.optionalAttrs envoy envoyFlags // cfg.blobserver.extraFlags;
  authzFlags = authzOnlyFlags // coreFlags // cfg.authz.extraFlags;

  # The policy directory: the shipped default policy and its tests, with the
  # per-flake settings, groups and denylist from Nix values; or a whole
  # directory of the administrator's own (authz.policyDir).
  shippedPolicies = "${cfg.package}/share/flakegate/policies";
  toYAML = builtins.toJSON; # JSON is YAML
  policyFiles =
    if cfg.authz.policyDir != null then
      { }
    else
      {
        "flakegate.rego".source = "${shippedPolicies}/flakegate.rego";
        "flakegate_test.rego".source = "${shippedPolicies}/flakegate_test.rego";
        "flakes.yaml".text = toYAML cfg.authz.flakes;
      }
      // lib.optionalAttrs (cfg.authz.groups != { }) { "groups.yaml".text = toYAML cfg.authz.groups; }
      // lib.optionalAttrs (cfg.authz.denylist != null) {
        "denylist.yaml".text = toYAML cfg.authz.denylist;
      };

  # What every unit shares: restarts and the sandbox. examples/systemd's
  # units carry the same list (test/nixos TestHardeningMatchesExamples
  # compares them). /etc is read-only under ProtectSystem=strict, so the
  # examples' ReadOnlyPaths=/etc/flakegate is not needed here.
  commonServiceConfig = {
    DynamicUser = true;
    StateDirectoryMode = "0700";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
    UMask = "0077";
    Restart = "on-failure";
    RestartSec = "2s";
  };

  loadCredentials = ids: files: lib.zipListsWith (id: f: "${id}:${f}") ids files;

  issuersTrigger = config.environment.etc."flakegate/issuers.yaml".text or issuersPath;

  # A unit running the blob server (single-host or not): what both share.
  blobUnit =
    unit:
    unit
    // {
      documentation = [ "https://github.com/flakegate/flakegate" ];
      wantedBy = [ "multi-user.target" ];
      serviceConfig =
        commonServiceConfig
        // {
          Type = "simple";
          # Running uploads get time to finish on stop (-shutdown-timeout).
          TimeoutStopSec = "90s";
          # Multi-GB uploads and many clients: plenty of file descriptors.
          LimitNOFILE = 65536;
          # A public port below 1024 (443) needs this one capability, and
          # nothing else privileged.
          CapabilityBoundingSet = lib.optionalString privilegedPort "CAP_NET_BIND_SERVICE";
          AmbientCapabilities = lib.optionalString privilegedPort "CAP_NET_BIND_SERVICE";
          EnvironmentFile = lib.optional (cfg.blobserver.environmentFile != null) cfg.blobserver.environmentFile;
          SupplementaryGroups = lib.optional (cfg.blobserver.tls.group != null) cfg.blobserver.tls.group;
        }
        # (An assertion refuses a dataDir outside /var/lib.)
        // lib.optionalAttrs (stateDirOf cfg.blobserver.dataDir != null) {
          StateDirectory = stateDirOf cfg.blobserver.dataDir;
        }
        // unit.serviceConfig;
    };

in
{
  options.services.flakegate = {
    enable = mkEnableOption "flakegate, a Nix binary cache with per-flake read and push rights";

    package = mkOption {
      type = types.package;
      default = pkgs.flakegate;
      defaultText = literalExpression "pkgs.flakegate (flake: flakegate.packages.\${system}.default)";
      description = "The flakegate package (bin/authz, bin/blobserver, share/flakegate/policies).";
    };

    mode = mkOption {
      type = types.enum [
        "single-host"
        "embedded-gate"
        "behind-envoy"
      ];
      default = "single-host";
      description = ''
        single-host: one process (unit flakegate) serves clients and
        authorizes every request in process. embedded-gate: the blob server
        faces clients and asks a separate authz (units flakegate-blobserver
        and flakegate-authz) over gRPC before every request. behind-envoy:
        Envoy faces clients (configure it yourself from
        share/flakegate/envoy.yaml) and asks authz; the blob server listens on
        loopback, ungated.
      '';
    };

    publicURL = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://cache.example.com";
      description = "The cache's public URL: enables the token exchange (authz -public-url).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the blob server's public port (single-host and embedded-gate modes).";
    };

    blobserver = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run the blob server on this host.";
      };
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:8080";
        description = ''
          Public listener (host:port). Loopback by default: put a TLS reverse
          proxy in front, or listen on the network in embedded-gate mode.
        '';
      };
      internalListen = mkOption {
        type = types.str;
        default = "127.0.0.1:8081";
        description = "Internal listener (owners lookups for authz, /metrics, /healthz). Keep it off the network.";
      };
      dataDir = mkOption {
        type = types.str;
        default = if cfg.mode == "single-host" then "/var/lib/flakegate" else "/var/lib/flakegate-blobserver";
        defaultText = literalExpression ''if mode == "single-host" then "/var/lib/flakegate" else "/var/lib/flakegate-blobserver"'';
        description = "Blobs, index, the generated signing key (and, single-host, the token keys); must be under /var/lib (a systemd StateDirectory).";
      };
      storage = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "s3://bucket/prefix?region=eu-west-1";
        description = "Blob store URL (default: file://<dataDir>/blobs). Credentials go in environmentFile, never here.";
      };
      index = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgres://flakegate@db/flakegate";
        description = "Index URL (default: sqlite://<dataDir>/index.db). The password goes in environmentFile (PGPASSWORD), never here.";
      };
      signingKeyFiles = mkOption {
        type = types.listOf secretPath;
        default = [ ];
        example = [ "/run/secrets/flakegate-signing-key" ];
        description = ''
          Nix secret key files (nix-store --generate-binary-cache-key); every
          key signs (rotation). Empty: a key is created in dataDir on first start.
        '';
      };
      tls = {
        certFile = mkOption {
          type = types.nullOr secretPath;
          default = null;
          example = "/var/lib/acme/cache.example.com/fullchain.pem";
          description = ''
            Certificate chain (PEM) for HTTPS and HTTP/2 on the public listener
            (blobserver -tls-cert): the single host can face the network without
            a proxy. Re-read when the file changes (a renewal needs no restart).
          '';
        };
        keyFile = mkOption {
          type = types.nullOr secretPath;
          default = null;
          example = "/var/lib/acme/cache.example.com/key.pem";
          description = ''
            Its private key (blobserver -tls-key). Read in place, not as a
            systemd credential (credentials are copied once at start, which
            would defeat the reload): give the unit a group that may read it
            with tls.group.
          '';
        };
        group = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "acme";
          description = "A group allowed to read tls.keyFile, added to the unit (SupplementaryGroups).";
        };
      };
      environmentFile = mkOption {
        type = types.nullOr secretPath;
        default = null;
        description = "File of VAR=value lines (S3 and PostgreSQL credentials), read by systemd.";
      };
      extAuthz = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "embedded-gate: authz's gRPC address (default: this host's authz.listen).";
      };
      authzHTTP = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "embedded-gate: authz's HTTP URL for /_flakegate/ (default: this host's authz.httpListen).";
      };
      extraFlags = mkOption {
        type = types.attrsOf flagValue;
        default = { };
        example = {
          "max-nar-size" = "8GiB";
          "access-log" = true;
        };
        description = "More blobserver flags, name (without -) to value.";
      };
    };

    authz = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run authz on this host (single-host: the authorization core in the one process, which cannot be turned off).";
      };
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:9001";
        description = "ext_authz gRPC listener (host:port or unix:/path).";
      };
      httpListen = mkOption {
        type = types.str;
        default = "127.0.0.1:9002";
        description = "HTTP listener: /_flakegate/ (token exchange), /metrics, /healthz.";
      };
      issuers = mkOption {
        type = types.listOf (types.attrsOf types.anything);
        default = [ ];
        example = literalExpression ''
          [ { name = "github"; issuer = "https://token.actions.githubusercontent.com";
              jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks";
              audience = [ "https://cache.example.com" ]; claims = "github-actions"; } ]
        '';
        description = "Trusted identity providers, as the issuers: list of examples/issuers.yaml.";
      };
      issuersFile = mkOption {
        type = types.nullOr (types.either types.path types.str);
        default = null;
        description = "An issuers YAML file instead of `issuers`.";
      };
      flakes = mkOption {
        type = types.attrsOf types.anything;
        default = { };
        example = {
          "acme/secret".read.users = [ "alice" ];
        };
        description = "Per-flake settings of the default policy (policies/flakes.yaml); {} gives every flake the defaults.";
      };
      groups = mkOption {
        type = types.attrsOf (types.listOf types.str);
        default = { };
        description = "Named user lists for flakes.<name>.read.groups (groups.yaml).";
      };
      denylist = mkOption {
        type = types.nullOr (types.attrsOf types.anything);
        default = null;
        description = "Revoked token ids and subjects (denylist.yaml, see internal/revoke).";
      };
      policyDir = mkOption {
        type = types.nullOr (types.either types.path types.str);
        default = null;
        description = "A whole policy directory of your own instead of the default policy with flakes, groups and denylist.";
      };
      tokenKeyFiles = mkOption {
        type = types.listOf secretPath;
        default = [ ];
        description = ''
          Cache-token signing keys (PEM, see internal/tokens); the newest signs.
          Empty: authz creates one in /var/lib/flakegate-authz/token-keys
          (single-host: <dataDir>/token-keys).
        '';
      };
      extraFlags = mkOption {
        type = types.attrsOf flagValue;
        default = { };
        example = {
          "token-lifetime" = "2h";
        };
        description = "More authz flags, name (without -) to value (single-host: only the core's, e.g. token-lifetime, owners-ttl).";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !(single && !cfg.authz.enable);
        message = "services.flakegate: mode \"single-host\" authorizes every request in the one process: authz.enable = false would leave nothing to authorize; pick mode \"embedded-gate\" with blobserver.extAuthz for a remote authz.";
      }
      {
        assertion = !(single && !cfg.blobserver.enable);
        message = "services.flakegate: mode \"single-host\" is the blob server's process: blobserver.enable cannot be false.";
      }
      {
        assertion = !(single && (cfg.blobserver.extAuthz != null || cfg.blobserver.authzHTTP != null));
        message = "services.flakegate: blobserver.extAuthz and blobserver.authzHTTP name a separate authz, which mode \"single-host\" does not use (it authorizes in process).";
      }
      {
        assertion = !(embedded && extAuthz == null);
        message = "services.flakegate: mode \"embedded-gate\" needs authz: enable services.flakegate.authz or set blobserver.extAuthz (the blob server must never serve ungated on its public port).";
      }
      {
        assertion = !(envoy && cfg.blobserver.enable && !isLoopback cfg.blobserver.listen);
        message = "services.flakegate: mode \"behind-envoy\" serves ungated and trusts the x-flakegate-subject header: blobserver.listen (${cfg.blobserver.listen}) must be a loopback address that only Envoy reaches.";
      }
      {
        assertion = !(envoy && (cfg.blobserver.extAuthz != null || cfg.blobserver.authzHTTP != null));
        message = "services.flakegate: blobserver.extAuthz and blobserver.authzHTTP are for mode \"embedded-gate\"; behind Envoy, Envoy asks authz.";
      }
      {
        assertion = (cfg.blobserver.tls.certFile == null) == (cfg.blobserver.tls.keyFile == null);
        message = "services.flakegate: blobserver.tls.certFile and blobserver.tls.keyFile go together (HTTPS needs both).";
      }
      {
        assertion = !(cfg.blobserver.tls.certFile != null && envoy);
        message = "services.flakegate: blobserver.tls is for a public listener; in mode \"behind-envoy\" Envoy terminates TLS.";
      }
      {
        assertion = !(cfg.openFirewall && envoy);
        message = "services.flakegate: openFirewall opens the blob server's public port, which mode \"behind-envoy\" does not have (the blob server is ungated there); open Envoy's port.";
      }
      {
        assertion = !(cfg.openFirewall && isLoopback cfg.blobserver.listen);
        message = "services.flakegate: openFirewall is set but blobserver.listen (${cfg.blobserver.listen}) is a loopback address.";
      }
      {
        assertion = stateDirOf cfg.blobserver.dataDir != null;
        message = "services.flakegate: blobserver.dataDir (${cfg.blobserver.dataDir}) must be under /var/lib (a systemd StateDirectory of the service's dynamic user).";
      }
      {
        assertion = !(localAuthz || single) || (cfg.authz.issuers != [ ]) != (cfg.authz.issuersFile != null);
        message = "services.flakegate: set exactly one of authz.issuers and authz.issuersFile.";
      }
      {
        assertion =
          cfg.authz.policyDir == null
          || (cfg.authz.flakes == { } && cfg.authz.groups == { } && cfg.authz.denylist == null);
        message = "services.flakegate: authz.policyDir replaces the default policy: put flakes.yaml, groups.yaml and denylist.yaml in it instead of setting authz.flakes, authz.groups or authz.denylist.";
      }
      {
        assertion = overriddenFlags == [ ];
        message = "services.flakegate: extraFlags set ${lib.concatMapStringsSep ", " (n: "-" + n) overriddenFlags}, which the module sets from its own options (blobserver.listen, blobserver.signingKeyFiles, authz.tokenKeyFiles…): set those, so that the module's checks see them (keys go through systemd credentials, never the store) and a flag cannot switch the mode.";
      }
      {
        # user:password@ or a password= parameter (PostgreSQL connection URLs take both).
        assertion = builtins.all (u: builtins.match "([a-z0-9+.-]+://[^/@]*:[^/@]*@.*|.*[?&]password=.*)" u == null) (
          lib.filter (u: u != null) [
            cfg.blobserver.storage
            cfg.blobserver.index
          ]
        );
        message = "services.flakegate: blobserver.storage and blobserver.index must not contain a password (it would land in the Nix store): put it in blobserver.environmentFile.";
      }
    ];

    warnings =
      lib.optional (servesClients && cfg.blobserver.enable && !isLoopback cfg.blobserver.listen) "services.flakegate: the blob server listens on ${cfg.blobserver.listen} without TLS: tokens cross the network in clear unless a TLS proxy is in front."
      ++ lib.optional (cfg.blobserver.enable && !isLoopback cfg.blobserver.internalListen) "services.flakegate: blobserver.internalListen (${cfg.blobserver.internalListen}) is not a loopback address: its owners lookups and metrics are unauthenticated; let only authz (or nothing) reach it.";

    environment.etc =
      lib.optionalAttrs (cfg.authz.enable && cfg.authz.issuersFile == null) {
        "flakegate/issuers.yaml".text = toYAML { issuers = cfg.authz.issuers; };
      }
      // lib.optionalAttrs cfg.authz.enable (
        if cfg.authz.policyDir != null then
          { "flakegate/policies".source = cfg.authz.policyDir; }
        else
          lib.mapAttrs' (name: v: lib.nameValuePair "flakegate/policies/${name}" v) policyFiles
      );

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && servesClients) (
      portOf cfg.blobserver.listen
    );

    systemd.services.flakegate = mkIf single (blobUnit {
      description = "flakegate on one host (Nix binary cache, embedded gate and authorization in one process)";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # The policies are hot-reloaded from /etc/flakegate/policies; the
      # issuers file is read at start.
      restartTriggers = [ issuersTrigger ];
      serviceConfig = {
        # Refuse to start on a broken issuers file or policy (compile + *_test.rego).
        ExecStartPre = "${cfg.package}/bin/blobserver -check ${renderFlags singleFlags}";
        ExecStart = "${cfg.package}/bin/blobserver ${renderFlags singleFlags}";
        LoadCredential =
          loadCredentials signingKeyIds cfg.blobserver.signingKeyFiles
          ++ loadCredentials tokenKeyIds cfg.authz.tokenKeyFiles;
      };
    });

    systemd.services.flakegate-authz = mkIf localAuthz {
      description = "flakegate authz (ext_authz gRPC service and token exchange)";
      documentation = [ "https://github.com/flakegate/flakegate" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ issuersTrigger ];
      serviceConfig = commonServiceConfig // {
        Type = "simple";
        # Refuse to start on a broken issuers file or policy (compile + *_test.rego).
        ExecStartPre = "${cfg.package}/bin/authz -check ${renderFlags authzFlags}";
        ExecStart = "${cfg.package}/bin/authz ${renderFlags authzFlags}";
        TimeoutStopSec = "20s";
        StateDirectory = "flakegate-authz";
        LoadCredential = loadCredentials tokenKeyIds cfg.authz.tokenKeyFiles;
      };
    };

    systemd.services.flakegate-blobserver = mkIf (cfg.blobserver.enable && !single) (blobUnit {
      description = "flakegate blob server (Nix binary cache storage)";
      after = [ "network-online.target" ] ++ lib.optional localAuthz "flakegate-authz.service";
      wants = [ "network-online.target" ] ++ lib.optional (embedded && localAuthz) "flakegate-authz.service";
      restartTriggers = [ ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/blobserver ${renderFlags blobserverFlags}";
        LoadCredential = loadCredentials signingKeyIds cfg.blobserver.signingKeyFiles;
      };
    });
  };
}

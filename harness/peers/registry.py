"""The set of known peers: the built-in manifests plus the user's ``--peers-file`` files.

A user peer with the same role and name as a built-in replaces it (and ``describe()`` says so);
two user files defining the same peer are an error, since neither can be meant to win.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import HarnessError
from harness.peers.manifest import ROLES, PeerManifest
from harness.peers.parse import load_manifests

__all__ = ["BUILTIN_DIR", "PeerRegistry"]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


class PeerRegistry:
    def __init__(self) -> None:
        self._peers: dict[tuple[str, str], PeerManifest] = {}
        self._builtin_keys: set[tuple[str, str]] = set()
        self._replaced: dict[tuple[str, str], PeerManifest] = {}  # key -> the built-in a user file replaced

    @classmethod
    def default(cls, peers_files: Iterable[str | Path] = ()) -> PeerRegistry:
        """Built-ins, then each user file in order."""
        registry = cls()
        registry.load_builtin()
        for path in peers_files:
            registry.add_file(path)
        return registry

    def load_builtin(self, directory: Path = BUILTIN_DIR) -> list[PeerManifest]:
        """Load every ``*.toml`` in ``directory`` (sorted, so the order is stable)."""
        loaded: list[PeerManifest] = []
        for path in sorted(directory.glob("*.toml")):
            for manifest in load_manifests(path):
                key = (manifest.role, manifest.name)
                if key in self._peers:
                    raise HarnessError(
                        f"built-in peer {manifest.label} is defined twice: {self._peers[key].source} and {path}"
                    )
                self._peers[key] = manifest
                self._builtin_keys.add(key)
                loaded.append(manifest)
        return loaded

    def add_file(self, path: str | Path) -> list[PeerManifest]:
        """Add a user's manifest file (one ``[peer]`` or several ``[[peers]]``)."""
        manifests = load_manifests(path)
        seen_here: set[tuple[str, str]] = set()
        for manifest in manifests:
            key = (manifest.role, manifest.name)
            if key in seen_here:
                raise HarnessError(f"{manifest.source}: peer {manifest.label} is defined twice in this file")
            seen_here.add(key)
            existing = self._peers.get(key)
            if existing is not None and key not in self._builtin_keys and existing.source != manifest.source:
                raise HarnessError(
                    f"peer {manifest.label} is defined in both {existing.source} and {manifest.source}; "
                    "rename one (peer names are unique within a role)"
                )
        for manifest in manifests:
            key = (manifest.role, manifest.name)
            if key in self._builtin_keys:
                self._replaced[key] = self._peers[key]
                self._builtin_keys.discard(key)
            self._peers[key] = manifest
        return manifests

    def get(self, role: str, name: str) -> PeerManifest:
        self._check_role(role)
        try:
            return self._peers[(role, name)]
        except KeyError:
            known = ", ".join(m.name for m in self.by_role(role)) or "none"
            raise HarnessError(
                f"no {role} peer named {name!r}; known {role} peers: {known}. "
                "Add one with --peers-file <manifest.toml> (see `connformance peers`)"
            ) from None

    def by_role(self, role: str) -> list[PeerManifest]:
        self._check_role(role)
        return sorted((m for (r, _), m in self._peers.items() if r == role), key=lambda m: m.name)

    def all(self) -> list[PeerManifest]:
        return sorted(self._peers.values(), key=lambda m: (ROLES.index(m.role), m.name))

    def is_builtin(self, role: str, name: str) -> bool:
        return (role, name) in self._builtin_keys

    def describe(self) -> str:
        """A table of every peer, then each peer's knobs and capabilities (for `connformance peers`)."""
        peers = self.all()
        if not peers:
            return "no peers loaded"
        rows = [("ROLE", "NAME", "VERSION", "RUNTIMES", "SOURCE")]
        for m in peers:
            key = (m.role, m.name)
            if key in self._builtin_keys:
                origin = "built-in"
            elif key in self._replaced:
                origin = f"{m.source} (replaces the built-in {m.name})"
            else:
                origin = str(m.source)
            rows.append((m.role, m.name, m.version or "-", ",".join(m.runtimes), origin))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
            for row in rows
        ]
        for m in peers:
            lines.append("")
            lines.append(f"{m.label}: {m.description}" if m.description else m.label)
            lines.append(f"  capabilities: {', '.join(sorted(m.capabilities)) or '-'}")
            if not m.knobs:
                lines.append("  knobs:        -")
                continue
            lines.append("  knobs:")
            width = max(len(k) for k in m.knobs)
            for knob, mapping in sorted(m.knobs.items()):
                fmt = f" ({mapping.format})" if mapping.format else ""
                lines.append(f"    {knob.ljust(width)}  {mapping.kind} {mapping.target}{fmt}")
        return "\n".join(lines)

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in ROLES:
            raise HarnessError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self):
        return iter(self.all())

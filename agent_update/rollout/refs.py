"""Validation of every value that ends up in a git call or a remote shell.

The tool we replace put refs into the shell unquoted and checked them only
once. Here each value is checked against a narrow allowlist on every use
(docs/design.md §3), so that quoting is a second line of defence, not the
only one.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from agent_update.rollout.errors import ValidationError

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_BRANCH_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_PATH_CHARS = re.compile(r"[A-Za-z0-9._/+-]+")
# Characters a repository URL may contain at all (no IPv6 literals, no
# query strings): anything else has no business in a clone URL.
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_SHELL_META = set(";|&$`<>(){}[]*?!#^\\\"'")
MAX_LEN = 255
MAX_URL_LEN = 2048


def _text(value: object, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"{what} must be text, got {type(value).__name__}")
    return value


def _check_controls(value: str, field: str, what: str) -> None:
    for ch in value:
        if ch.isspace() or ord(ch) < 32 or ord(ch) == 127:
            raise ValidationError(
                field, f"{what} {value!r} contains whitespace or a control character ({ch!r})"
            )


def validate_commit(value: object, field: str = "commit") -> str:
    """A full 40-hex commit id, lowercased (short ids are ambiguous over time)."""
    text = _text(value, field, "commit").strip()
    if not _HEX40.fullmatch(text):
        raise ValidationError(
            field, f"{text!r} is not a full commit id (40 hexadecimal characters expected)"
        )
    return text.lower()


def validate_branch(value: object, field: str = "branch") -> str:
    """A branch name git accepts (check-ref-format) made of shell-inert characters."""
    text = _text(value, field, "branch")
    if not text:
        raise ValidationError(field, "branch is empty")
    _check_controls(text, field, "branch")
    if len(text) > MAX_LEN:
        raise ValidationError(field, f"branch {text[:40]!r}… is longer than {MAX_LEN} characters")
    if not _BRANCH_CHARS.fullmatch(text):
        bad = sorted({ch for ch in text if not _BRANCH_CHARS.fullmatch(ch)})
        raise ValidationError(
            field,
            f"branch {text!r} contains {''.join(bad)!r}; only letters, digits and . _ / - "
            "are allowed",
        )
    problem = _ref_problem(text)
    if problem:
        raise ValidationError(field, f"branch {text!r} is not a valid git branch name: {problem}")
    return text


def _ref_problem(text: str) -> str:
    """The first git check-ref-format rule ``text`` breaks, or ''."""
    if text.startswith("-"):
        return "it starts with '-'"
    if text.startswith("/") or text.endswith("/"):
        return "it starts or ends with '/'"
    if "//" in text:
        return "it contains '//'"
    if ".." in text:
        return "it contains '..'"
    if text.endswith("."):
        return "it ends with '.'"
    if "@{" in text or text == "@":
        return "it contains '@{' or is '@'"
    for part in text.split("/"):
        if part.startswith("."):
            return f"component {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"component {part!r} ends with '.lock'"
    return ""


def validate_repo_url(value: object, field: str = "repo") -> str:
    """A git URL or absolute path that cannot smuggle options or shell syntax.

    Accepted: https://host/path, http://host/path, ssh://[user@]host[:port]/path,
    scp-like user@host:path, file:///abs/path, /abs/path. Credentials inside
    an https URL are refused: they would land in logs and remote configs.
    """
    text = _text(value, field, "repository").strip()
    if not text:
        raise ValidationError(field, "repository is empty")
    _check_controls(text, field, "repository")
    if len(text) > MAX_URL_LEN:
        raise ValidationError(field, f"repository URL is longer than {MAX_URL_LEN} characters")
    bad = sorted({ch for ch in text if ch in _SHELL_META or ch in "?["})
    if bad:
        raise ValidationError(
            field, f"repository {text!r} contains forbidden characters {''.join(bad)!r}"
        )
    if text.startswith("-"):
        raise ValidationError(field, f"repository {text!r} looks like a command-line option")
    if "::" in text:
        raise ValidationError(
            field, f"repository {text!r} names a git remote helper ('::'), which is not allowed"
        )
    if not _URL_CHARS.fullmatch(text):
        raise ValidationError(field, f"repository {text!r} contains unsupported characters")
    if text.startswith("/"):
        _check_path(text, field, "repository path")
        return text
    if "://" in text:
        return _check_url(text, field)
    return _check_scp(text, field)


def _check_url(text: str, field: str) -> str:
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValidationError(field, f"file URL {text!r} must be file:///absolute/path")
        _check_path(parts.path, field, "repository path")
        return text
    if scheme not in ("https", "http", "ssh"):
        raise ValidationError(
            field, f"repository {text!r}: scheme {parts.scheme!r} is not https, http, ssh or file"
        )
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    if userinfo and scheme != "ssh":
        raise ValidationError(
            field,
            f"repository URL {_redact(text)!r} carries credentials; remove them and put the "
            "token in the git token setting instead",
        )
    if userinfo and not _USER.fullmatch(userinfo):
        raise ValidationError(field, f"repository {text!r}: user {userinfo!r} is not valid")
    host, _, port = hostport.partition(":")
    if not _HOST.fullmatch(host):
        raise ValidationError(field, f"repository {text!r}: host {host!r} is not valid")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValidationError(field, f"repository {text!r}: port {port!r} is not valid")
    if not parts.path or parts.path == "/" or "/-" in parts.path:
        raise ValidationError(field, f"repository {text!r} has no valid path after the host")
    return text


def _check_scp(text: str, field: str) -> str:
    head, sep, path = text.partition(":")
    if not sep or not path or "/" in head:
        raise ValidationError(
            field,
            f"repository {text!r} is not a URL (https://…, ssh://…, file://…), "
            "user@host:path or an absolute path",
        )
    user, _, host = head.rpartition("@")
    if user and not _USER.fullmatch(user):
        raise ValidationError(field, f"repository {text!r}: user {user!r} is not valid")
    if not _HOST.fullmatch(host):
        raise ValidationError(field, f"repository {text!r}: host {host!r} is not valid")
    if path.startswith("-") or "/-" in path:
        raise ValidationError(field, f"repository {text!r}: path looks like an option")
    return text


def _check_path(path: str, field: str, what: str) -> None:
    if not path.startswith("/"):
        raise ValidationError(field, f"{what} {path!r} must be absolute")
    if not _PATH_CHARS.fullmatch(path):
        raise ValidationError(
            field, f"{what} {path!r} may contain only letters, digits and . _ / + -"
        )
    if "/-" in path:
        raise ValidationError(field, f"{what} {path!r} has a component starting with '-'")
    if any(part == ".." for part in path.split("/")):
        raise ValidationError(field, f"{what} {path!r} must not contain '..'")


def _redact(text: str) -> str:
    scheme, _, rest = text.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def validate_agent_dir(value: object, field: str = "agent_dir") -> str:
    """The agent's directory on a server: absolute, shell-inert, no '..'."""
    text = _text(value, field, "agent directory").strip()
    if not text:
        raise ValidationError(field, "agent directory is empty")
    _check_controls(text, field, "agent directory")
    if len(text) > MAX_LEN:
        raise ValidationError(field, f"agent directory is longer than {MAX_LEN} characters")
    _check_path(text, field, "agent directory")
    stripped = text.rstrip("/")
    if not stripped:
        raise ValidationError(field, "agent directory must not be '/'")
    return stripped


_UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_URL_PATH = re.compile(r"[A-Za-z0-9._~/%+-]*")


def validate_unix_user(value: object, field: str = "agent_user") -> str:
    """A POSIX login name (``useradd``'s default rule): it goes into sudo and shells."""
    text = _text(value, field, "user").strip()
    if not text:
        raise ValidationError(field, "user name is empty")
    if not _UNIX_USER.fullmatch(text):
        raise ValidationError(
            field,
            f"{text!r} is not a user name (lower-case letters, digits, _ and -, "
            "starting with a letter or _, at most 32 characters)",
        )
    return text


def validate_host(value: object, field: str = "host") -> str:
    """A DNS name, an IPv4 or an IPv6 address: it reaches SSH and the known hosts lookup.

    An IPv6 address is kept bare and compressed (``::1``, not ``[::1]``): the
    brackets belong to URLs and to ``[host]:port`` in known hosts, added there.
    """
    text = _text(value, field, "host").strip()
    if not text:
        raise ValidationError(field, "host is empty")
    if ":" in text:
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            return str(ipaddress.IPv6Address(bare))
        except ValueError:
            raise ValidationError(field, f"{text!r} is not an IPv6 address") from None
    if _IPV4.fullmatch(text):
        if any(int(part) > 255 for part in text.split(".")):
            raise ValidationError(field, f"{text!r} is not an IPv4 address")
        return text
    if not _HOSTNAME.fullmatch(text) or text.replace(".", "").isdigit():
        raise ValidationError(field, f"{text!r} is not a host name or IPv4 address")
    return text


def _netloc(netloc: str) -> tuple[str, str]:
    """Host and port of a URL's netloc; an IPv6 host keeps its brackets (``[::1]:8000``)."""
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        return host + "]", rest.removeprefix(":")
    host, _, port = netloc.partition(":")
    return host, port


def validate_port(value: object, field: str = "ssh_port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValidationError(field, f"port {value!r} is not a whole number within 1 … 65535")
    return value


def validate_agent_url(value: object, field: str = "agent_url") -> str:
    """The agent's base URL: http(s)://host[:port][/path], no credentials, query or fragment."""
    text = _text(value, field, "agent URL").strip().rstrip("/")
    if not text:
        raise ValidationError(field, "agent URL is empty")
    _check_controls(text, field, "agent URL")
    if len(text) > MAX_URL_LEN:
        raise ValidationError(field, f"agent URL is longer than {MAX_URL_LEN} characters")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for an unclosed [
        raise ValidationError(field, f"agent URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(field, f"agent URL {text!r} must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValidationError(field, "agent URL must not carry credentials (use the password)")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValidationError(field, f"agent URL {text!r} must not have a query or fragment")
    host, port = _netloc(parts.netloc)
    if host.startswith("[") != host.endswith("]"):
        raise ValidationError(field, f"agent URL {text!r}: host {host!r} is not valid")
    validate_host(host, field)
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValidationError(field, f"agent URL {text!r}: port {port!r} is not valid")
    if not _URL_PATH.fullmatch(parts.path) or ".." in parts.path.split("/"):
        raise ValidationError(field, f"agent URL {text!r}: path {parts.path!r} is not valid")
    return text

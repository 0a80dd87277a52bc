"""EASE (Steck, WWW 2019) in closed form, and EASE with a recency-weighted query (``ease_recency``).

Two exact solvers of the same model, chosen by shape: the item-space inverse of ``X^T X + l2 I``
(``n_items^3``), or, when fewer users than items interacted, the user-space (Woodbury) form that never builds
an ``n_items x n_items`` matrix (``n_users^2 n_items``): on ml-latest-small (610 users, 9,742 items) that is
about 1 s instead of about 40 s per fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from recsys_llm.classic.base import Recommender, _binary_matrix, _check_count

__all__ = ["EASE", "RecencyEASE"]

SOLVERS = ("auto", "items", "users")


@dataclasses.dataclass
class _UserSolution:
    """The user solver's fit: sparse ``X``, ``K^{-1} = (X X^T + l2 I)^{-1}`` and ``d_i = X[:, i] . K^{-1} X[:, i]``;
    ``B`` is formed only on request (``weights``). The item solver's fit is ``B`` itself."""

    x: sp.csr_matrix
    kinv: np.ndarray
    d: np.ndarray
    weights: np.ndarray | None = None


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019), closed form.

    With ``X`` the binary ``(users, items)`` matrix (repeated interactions count once)::

        G = X^T X + l2 * I,   P = G^{-1},   B[j, i] = -P[j, i] / P[i, i],   B[i, i] = 0
        score(u, .) = q_u @ B                          (q_u the query row: binary history, see `halflife`)

    The user solver gets the same ``B`` from Woodbury's identity, with ``K = X X^T + l2 I`` over the users
    that have interactions: ``l2 P = I - X^T K^{-1} X``, so with ``d_i = X[:, i] . K^{-1} X[:, i]``::

        B[j, i] = (X^T K^{-1} X)[j, i] / (1 - d_i)  (j != i)
        score(u, i) = (((q_u X^T) K^{-1} X)_i - q_u,i d_i) / (1 - d_i)      (X stays sparse throughout)

    ``solver="auto"`` takes the user solver when fewer users than items have interactions. Dense
    ``(n_items, n_items)`` (item solver) or ``(n_users, n_items)`` (user solver) float64 matrices are built,
    so the catalog is capped at ``max_items``.

    Args:
        l2: ridge strength ``> 0``.
        max_items: refuse catalogs larger than this (``n_items^2 * 8`` bytes per dense matrix).
        solver: ``auto``, ``items`` or ``users``.

    Raises:
        ValueError: in ``fit``, when ``n_items > max_items``.

    Example:
        >>> m = EASE(l2=500.0).fit(train, n_users, n_items)
        >>> scores, ids = m.recommend(users, histories, k=10, seen=histories)
    """

    name: ClassVar[str] = "ease"
    halflife: float = 0.0  # query weighting (`recsys_llm.classic.base.query_matrix`); 0 = binary

    def __init__(self, l2: float = 500.0, max_items: int = 30000, solver: str = "auto") -> None:
        if not np.isfinite(l2) or l2 <= 0:
            raise ValueError(f"l2 must be a finite number > 0; got {l2!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
        self.l2 = float(l2)
        self.max_items = _check_count(max_items, "max_items")
        self.solver = solver

    def _params(self) -> dict[str, Any]:
        return {"l2": self.l2, "max_items": self.max_items, "solver": self.solver}

    @property
    def weights_(self) -> np.ndarray:
        """float32 ``(n_items, n_items)`` ``B`` (``S[h, i]``: how much history item ``h`` predicts ``i``)."""
        self._check_fitted()
        sol = self._solution
        if isinstance(sol, np.ndarray):
            return sol
        if sol.weights is None:  # user solver: form B once, on request
            b = np.asarray((sol.x.T @ (sol.x.T @ sol.kinv).T).T)  # (items, items) X^T K^{-1} X, X sparse
            b /= 1.0 - sol.d
            b[np.diag_indices(self.n_items)] = 0.0
            sol.weights = b.astype(np.float32)
        return sol.weights

    def _fit(self, users, items, train, item_texts, valid) -> None:
        self._solution = self._solve(self._gram(users, items), self.l2)

    def _fit_shared(self, users, items, train, item_texts, valid, shared: dict[Any, Any]) -> None:
        """One Gram matrix per grid, one solve per ``l2``: consecutive settings that differ only in
        query-time parameters (``halflife``) share the solution."""
        kind = (self._solver_for(users), self.max_items)
        if kind not in shared:
            shared[kind] = self._gram(users, items)
        key = (kind, self.l2)
        if shared.get("solved", (None,))[0] != key:
            shared["solved"] = (key, self._solve(shared[kind], self.l2))
        self._solution = shared["solved"][1]

    # ------------------------------------------------------------------------------------------ internals
    def _solver_for(self, users: np.ndarray) -> str:
        if self.solver != "auto":
            return self.solver
        return "users" if np.unique(users).size < self.n_items else "items"

    def _gram(self, users: np.ndarray, items: np.ndarray) -> tuple:
        """``("items", X^T X)`` or ``("users", X X^T, X)`` over the users with interactions, float64."""
        n = self.n_items
        if n > self.max_items:
            gib = n * n * 8 / 2**30
            raise ValueError(
                f"EASE needs dense {n} x {n} float64 matrices (~{gib:.1f} GiB each) and n_items={n} exceeds "
                f"max_items={self.max_items}: prune the catalog to popular items, use ItemKNN, or pass a larger "
                "max_items if the memory is there"
            )
        kind = self._solver_for(users)
        rows = np.unique(users, return_inverse=True)[1]  # users with interactions only
        x = _binary_matrix(rows, items, int(rows.max(initial=-1)) + 1, n)  # (users, items)
        if kind == "items":
            return ("items", (x.T @ x).toarray())  # (items, items)
        return ("users", (x @ x.T).toarray(), x)  # (users, users), (users, items)

    @staticmethod
    def _solve(gram: tuple, l2: float) -> np.ndarray | _UserSolution:
        if gram[0] == "items":
            g = gram[1].copy()
            g[np.diag_indices(len(g))] += l2
            p = np.linalg.inv(g)  # (items, items)
            del g
            p /= -np.diag(p)  # column i divided by -P[i, i]
            p[np.diag_indices(len(p))] = 0.0
            return p.astype(np.float32)  # (items, items): B
        _, k, x = gram
        k = k.copy()
        k[np.diag_indices(len(k))] += l2
        kinv = sla.cho_solve(sla.cho_factor(k, check_finite=False), np.eye(len(k)), check_finite=False)
        xt = x.T.tocsr()  # (items, users)
        d = np.asarray(xt.multiply(xt @ kinv).sum(axis=1)).ravel()  # (items,): X[:, i] . K^-1 X[:, i], in [0, 1)
        return _UserSolution(x, kinv, d)

    def _score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        q = self._query_matrix(histories, self.halflife)  # (users, items)
        sol = self._solution
        if isinstance(sol, np.ndarray):
            return np.asarray(q @ sol)  # (users, items)
        q = q.astype(np.float64)
        a = (q @ sol.x.T).toarray() @ sol.kinv  # (users, train users): q X^T K^{-1}
        t = np.asarray((sol.x.T @ a.T).T)  # (users, items): ... X, with X sparse
        t -= q.multiply(sol.d[None, :]).toarray()  # the item's own term: B[i, i] = 0
        t /= 1.0 - sol.d
        return t


class RecencyEASE(EASE):
    """EASE whose query weighs recent history items more: ``ease_recency``.

    The query row of a history counts the item ``a`` positions before the most recent ``0.5 ** (a / halflife)``
    (`recsys_llm.classic.base.recency_weights`; ``halflife = 0`` is plain EASE). ``B`` is EASE's, fitted on
    binary training rows; only the query changes, so the half-life can be tuned without refitting. This is
    the collaborative part of the hybrid (``recsys_llm.hybrid.CollaborativeScorer.score``) as a baseline.

    Args:
        l2: ridge strength ``> 0``.
        halflife: recency half-life in history positions (``>= 0``).
        max_items, solver: as in `EASE`.

    Example:
        >>> m = RecencyEASE(l2=300.0, halflife=10.0).fit(train, n_users, n_items)
        >>> scores, ids = m.recommend(users, histories, k=10, seen=histories)
    """

    name: ClassVar[str] = "ease_recency"

    def __init__(
        self, l2: float = 500.0, halflife: float = 10.0, max_items: int = 30000, solver: str = "auto"
    ) -> None:
        super().__init__(l2, max_items, solver)
        if not np.isfinite(halflife) or halflife < 0:
            raise ValueError(f"halflife must be a finite number >= 0; got {halflife!r}")
        self.halflife = float(halflife)

    def _params(self) -> dict[str, Any]:
        return {"l2": self.l2, "halflife": self.halflife, "max_items": self.max_items, "solver": self.solver}

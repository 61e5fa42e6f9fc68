"""Relevance feedback and personalization (issue #17): events, profiles, and a bounded re-ranker.

Layout (each module one concern; none imports the collection):

* ``settings.py`` - :class:`PersonalizeConfig`, the per-collection weights, stored with the data
  (table ``personalization``) as versioned JSON;
* ``signals.py`` - argument checks of ``Collection.feedback`` and the one number an event stands for;
* ``model.py`` - a user's profile: decayed Rocchio preference vector, per-record and per-field
  statistics; :class:`Profile` is its frozen public snapshot;
* ``rerank.py`` - the :class:`Reranker` Protocol, the vectorized re-ranker and the per-candidate
  pure-numpy reference it is tested against;
* ``service.py`` - :class:`Personalizer`: profiles kept in step with the durable events of one collection.
"""

from __future__ import annotations

from .model import FieldPreference, Profile
from .settings import PersonalizeConfig

__all__ = ["FieldPreference", "PersonalizeConfig", "Profile"]

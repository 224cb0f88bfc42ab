"""The table registry: every Phase 2 and Phase 4 table declared once.

Assets, checks, heal rules, warehouse DDL, CLI output and docs are all generated from
``TABLES``; adding a table is one entry here (plus its feed or SQL), not edits in five files.
This module is plain Python (no Dagster import) so any layer can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

LOADED_AT = "_loaded_at"
"""Column every table carries: when its partition was last written (UTC)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DATE | STRING | INT | FLOAT | BOOL | TIMESTAMP (mapped per engine)
    description: str = ""
    nullable: bool = True


@dataclass(frozen=True)
class Upstream:
    """A table this one reads: the same date (``lookback_days=0``) or the N dates before it."""

    table: str
    lookback_days: int = 0

    @property
    def is_lookback(self) -> bool:
        return self.lookback_days > 0


@dataclass(frozen=True)
class Deadline:
    """Date D's partition is due at D + ``days_after``, ``hour``:``minute`` US/Eastern."""

    days_after: int
    hour: int
    minute: int = 0


@dataclass(frozen=True)
class RowExpectation:
    """How many rows a game day may have: between a floor and a ceiling per scheduled game,
    both tightened by what recent game days held.

    ``max_per_game`` is what one game can produce for the table (two rosters of at most
    18 players, one row per team, one line per bookmaker, market and outcome…): more is a
    doubled load, never a busy day. Once ``history_min_days`` earlier game days exist, the
    floor is also at least ``history_fraction`` of the median rows-per-game of the last
    ``history_window`` game days, and the ceiling at most ``history_ceiling`` times it. 0.75
    rather than 0.5: a feed delivered at 60% must fail even where the per-game floor is low
    (odds, gamebooks); 1.5 rather than 2: a load doubled must fail even where one game can
    produce far more than a game usually does (odds), while normal days stay within 25% of
    the median (a one-game day, overtime, a growing lookback early in the season).
    """

    min_per_game: float
    max_per_game: float
    history_fraction: float = 0.75
    history_ceiling: float = 1.5
    history_min_days: int = 7
    history_window: int = 14


@dataclass(frozen=True)
class Table:
    name: str
    dataset: str
    phase: int
    partition_column: str
    columns: tuple[Column, ...]
    deadline: Deadline
    rows: RowExpectation
    description: str
    upstream: tuple[Upstream, ...] = ()
    cluster_by: tuple[str, ...] = ()
    # The columns that identify a row within its date: never NULL, never twice (the key
    # check). The partition column is implied (a key is unique within one date).
    row_key: tuple[str, ...] = ()
    feed: str | None = None  # Phase 2: the Phase 1 scraper that delivers this table
    phase4_order: int | None = None  # Phase 4: position in the fixed processor order

    @property
    def key(self) -> str:
        """The asset key as a path string, e.g. ``nba_raw/bdl_player_boxscores``."""
        return f"{self.dataset}/{self.name}"

    @property
    def key_path(self) -> list[str]:
        return [self.dataset, self.name]

    @property
    def lookback_days(self) -> int:
        """How many dates before D this table's processor reads (0 when it reads none)."""
        return max((u.lookback_days for u in self.upstream), default=0)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


# What each column means, shown in the UI's column schema (the asset's Definition tab). A column
# name means the same in every table that has it.
COLUMN_DOCS = {
    "game_date": "The game date (US/Eastern): the partition.",
    "analysis_date": "The date D the row is computed for (US/Eastern): the partition.",
    "game_id": "NBA.com game ID.",
    "season": "Season start year (2025 = the 2025-26 season).",
    "home_team": "Home team, three-letter abbreviation.",
    "away_team": "Away team, three-letter abbreviation.",
    "tipoff_at": "Scheduled tip-off (UTC).",
    "arena": "Arena name.",
    "national_tv": "Whether the game is on national TV.",
    "player_id": "Player ID (one ID across feeds).",
    "player_name": "Player name as the feed spells it.",
    "team_abbr": "The player's (or row's) team, three-letter abbreviation.",
    "opponent_abbr": "The opposing team, three-letter abbreviation.",
    "is_home": "Whether the team plays at home.",
    "starter": "Whether the player started.",
    "minutes": "Minutes played.",
    "points": "Points scored.",
    "fgm": "Field goals made.",
    "fga": "Field goals attempted.",
    "paint_fgm": "Field goals made in the paint.",
    "paint_fga": "Field goals attempted in the paint.",
    "mid_fgm": "Mid-range field goals made.",
    "mid_fga": "Mid-range field goals attempted.",
    "three_pm": "Three-pointers made.",
    "three_pa": "Three-pointers attempted.",
    "ftm": "Free throws made.",
    "fta": "Free throws attempted.",
    "rebounds": "Total rebounds.",
    "assists": "Assists.",
    "steals": "Steals.",
    "blocks": "Blocks.",
    "turnovers": "Turnovers.",
    "status": "Gamebook status: active, DNP or inactive.",
    "dnp_reason": "Why a player did not play (coach's decision, injury); empty if he played.",
    "bookmaker": "Bookmaker quoting the line.",
    "market": "Betting market: spreads, totals or h2h (moneyline).",
    "outcome": "The side quoted: a team, Over or Under.",
    "price": "American odds.",
    "point": "The spread or total line; empty for moneylines.",
    "snapshot_at": "When the line was captured (UTC).",
    "games_in_window": "Games played in the lookback window before D.",
    "opp_points_pg": "Points per game allowed in the window.",
    "opp_paint_fga_pg": "Opponent paint attempts per game allowed in the window.",
    "opp_paint_pct": "Opponent paint field-goal percentage allowed in the window.",
    "opp_mid_fga_pg": "Opponent mid-range attempts per game allowed in the window.",
    "opp_mid_pct": "Opponent mid-range field-goal percentage allowed in the window.",
    "opp_three_pa_pg": "Opponent three-point attempts per game allowed in the window.",
    "opp_three_pct": "Opponent three-point percentage allowed in the window.",
    "paint_defense_rating": "Paint percentage allowed / league average (below 1 = good defense).",
    "mid_defense_rating": "Mid-range percentage allowed / league average.",
    "three_defense_rating": "Three-point percentage allowed / league average.",
    "fga_pg": "Field-goal attempts per game in the window.",
    "paint_share": "Share of the player's attempts taken in the paint.",
    "mid_share": "Share of the player's attempts taken from mid-range.",
    "three_share": "Share of the player's attempts that are threes.",
    "paint_pct": "The player's paint field-goal percentage in the window.",
    "mid_pct": "The player's mid-range field-goal percentage in the window.",
    "three_pct": "The player's three-point percentage in the window.",
    "points_avg_last_5": "Average points over the player's last 5 games before D.",
    "points_avg_last_10": "Average points over the player's last 10 games before D.",
    "minutes_avg_last_5": "Average minutes over the player's last 5 games before D.",
    "minutes_avg_last_10": "Average minutes over the player's last 10 games before D.",
    "last_game_date": "The player's last game date before D.",
    "days_rest": "Days since the team's last game before D.",
    "is_back_to_back": "Whether the team also played the day before D.",
    "last_status": "The player's gamebook status in his last game (injury/DNP signal).",
    "matchup_factor": "Scoring adjustment from the opponent's zone defense vs his shot mix.",
    "fatigue_factor": "Scoring adjustment for rest and recent minutes load.",
    "form_trend": "Last-5 over last-10 points average (above 1 = trending up).",
    "composite_adjustment": "Combined points adjustment: matchup, fatigue and form.",
    "opp_paint_defense_rating": "The opponent's paint defense rating on D.",
    "opp_three_defense_rating": "The opponent's three-point defense rating on D.",
    "team_spread": "The team's consensus point spread for the game.",
    "game_total": "The consensus over/under total for the game.",
    "team_moneyline": "The team's consensus moneyline (American odds).",
    "bookmakers": "Bookmakers quoting the game.",
    "feature_version": "Feature set version.",
}


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse ``"name TYPE, name TYPE"`` so that column lists stay readable one per table."""
    out = []
    for part in spec.split(","):
        name, type_ = part.split()
        out.append(Column(name=name, type=type_, description=COLUMN_DOCS[name]))
    return tuple(out)


# When the data exists: the schedule and the betting lines of D are pre-game, box scores and
# gamebooks post-game.
PREGAME_DEADLINE = Deadline(days_after=0, hour=10)
PHASE2_DEADLINE = Deadline(days_after=1, hour=10)
PHASE4_DEADLINE = Deadline(days_after=0, hour=12)

# What one game can produce: an NBA roster holds 15 standard and 3 two-way contracts; a
# player's recent games may come from two teams (a trade in the lookback); The Odds API quotes
# a game in up to about 15 US bookmakers, each with spreads, totals and moneylines, two sides.
MAX_ROSTER = 18
MAX_PLAYERS_SEEN = 2 * MAX_ROSTER
MAX_BOOKMAKERS = 15

# Lookback windows (days strictly before D) read by the Phase 4 processors.
PLAYER_LOOKBACK = 30
TEAM_LOOKBACK = 15

TABLES: tuple[Table, ...] = (
    Table(
        name="nbac_schedule",
        dataset="nba_raw",
        phase=2,
        partition_column="game_date",
        feed="nbac_schedule",
        description="NBA.com schedule: one row per game on the date.",
        columns=_cols(
            "game_date DATE, game_id STRING, season INT, home_team STRING, away_team STRING,"
            " tipoff_at TIMESTAMP, arena STRING, national_tv BOOL"
        ),
        cluster_by=("game_id",),
        row_key=("game_id",),
        deadline=PREGAME_DEADLINE,
        rows=RowExpectation(min_per_game=1, max_per_game=1),
    ),
    Table(
        name="bdl_player_boxscores",
        dataset="nba_raw",
        phase=2,
        partition_column="game_date",
        feed="bdl_player_boxscores",
        description="Ball Don't Lie box scores: one row per player who played, with zone shooting.",
        columns=_cols(
            "game_date DATE, game_id STRING, player_id INT, player_name STRING, team_abbr STRING,"
            " opponent_abbr STRING, is_home BOOL, starter BOOL, minutes FLOAT, points INT,"
            " fgm INT, fga INT, paint_fgm INT, paint_fga INT, mid_fgm INT, mid_fga INT,"
            " three_pm INT, three_pa INT, ftm INT, fta INT, rebounds INT, assists INT,"
            " steals INT, blocks INT, turnovers INT"
        ),
        cluster_by=("player_id", "team_abbr"),
        upstream=(Upstream("nbac_schedule"),),
        row_key=("game_id", "player_id"),
        deadline=PHASE2_DEADLINE,
        rows=RowExpectation(min_per_game=16, max_per_game=2 * MAX_ROSTER),
    ),
    Table(
        name="nbac_gamebook_player_stats",
        dataset="nba_raw",
        phase=2,
        partition_column="game_date",
        feed="nbac_gamebook_player_stats",
        description="NBA.com gamebooks: every rostered player per game, DNP and inactive too.",
        columns=_cols(
            "game_date DATE, game_id STRING, player_id INT, player_name STRING, team_abbr STRING,"
            " opponent_abbr STRING, is_home BOOL, status STRING, dnp_reason STRING,"
            " minutes FLOAT, points INT"
        ),
        cluster_by=("player_id", "team_abbr"),
        upstream=(Upstream("nbac_schedule"),),
        row_key=("game_id", "player_id"),
        deadline=PHASE2_DEADLINE,
        rows=RowExpectation(min_per_game=24, max_per_game=2 * MAX_ROSTER),
    ),
    Table(
        name="odds_api_game_lines",
        dataset="nba_raw",
        phase=2,
        partition_column="game_date",
        feed="odds_api_game_lines",
        description="The Odds API game lines: spreads, totals and moneylines per bookmaker.",
        columns=_cols(
            "game_date DATE, game_id STRING, home_team STRING, away_team STRING,"
            " bookmaker STRING, market STRING, outcome STRING, price INT, point FLOAT,"
            " snapshot_at TIMESTAMP"
        ),
        cluster_by=("game_id", "bookmaker"),
        upstream=(Upstream("nbac_schedule"),),
        row_key=("game_id", "bookmaker", "market", "outcome"),
        deadline=PREGAME_DEADLINE,
        rows=RowExpectation(min_per_game=12, max_per_game=MAX_BOOKMAKERS * 3 * 2),
    ),
    Table(
        name="team_defense_zone_analysis",
        dataset="nba_precompute",
        phase=4,
        phase4_order=1,
        partition_column="analysis_date",
        description=(
            "Per team playing on the date: opponent shooting allowed by zone over the last"
            f" {TEAM_LOOKBACK} days, rated against the league average."
        ),
        columns=_cols(
            "analysis_date DATE, team_abbr STRING, games_in_window INT, opp_points_pg FLOAT,"
            " opp_paint_fga_pg FLOAT, opp_paint_pct FLOAT, opp_mid_fga_pg FLOAT,"
            " opp_mid_pct FLOAT, opp_three_pa_pg FLOAT, opp_three_pct FLOAT,"
            " paint_defense_rating FLOAT, mid_defense_rating FLOAT, three_defense_rating FLOAT"
        ),
        cluster_by=("team_abbr",),
        upstream=(
            Upstream("bdl_player_boxscores", lookback_days=TEAM_LOOKBACK),
            Upstream("nbac_schedule"),
        ),
        row_key=("team_abbr",),
        deadline=PHASE4_DEADLINE,
        rows=RowExpectation(min_per_game=2, max_per_game=2),
    ),
    Table(
        name="player_shot_zone_analysis",
        dataset="nba_precompute",
        phase=4,
        phase4_order=2,
        partition_column="analysis_date",
        description=(
            "Per player of a team playing on the date: shot profile and accuracy by zone over"
            f" the last 10 games within {PLAYER_LOOKBACK} days."
        ),
        columns=_cols(
            "analysis_date DATE, player_id INT, player_name STRING, team_abbr STRING,"
            " games_in_window INT, fga_pg FLOAT, paint_share FLOAT, mid_share FLOAT,"
            " three_share FLOAT, paint_pct FLOAT, mid_pct FLOAT, three_pct FLOAT"
        ),
        cluster_by=("player_id",),
        upstream=(
            Upstream("bdl_player_boxscores", lookback_days=PLAYER_LOOKBACK),
            Upstream("nbac_schedule"),
        ),
        row_key=("player_id",),
        deadline=PHASE4_DEADLINE,
        rows=RowExpectation(min_per_game=16, max_per_game=2 * MAX_PLAYERS_SEEN),
    ),
    Table(
        name="player_daily_cache",
        dataset="nba_predictions",
        phase=4,
        phase4_order=3,
        partition_column="game_date",
        description=(
            "Per player scheduled on the date: rolling points/minutes form, rest and the game"
            " they play."
        ),
        columns=_cols(
            "game_date DATE, player_id INT, player_name STRING, team_abbr STRING,"
            " opponent_abbr STRING, game_id STRING, is_home BOOL, games_in_window INT,"
            " points_avg_last_5 FLOAT, points_avg_last_10 FLOAT, minutes_avg_last_5 FLOAT,"
            " minutes_avg_last_10 FLOAT, last_game_date DATE, days_rest INT,"
            " is_back_to_back BOOL, last_status STRING"
        ),
        cluster_by=("player_id",),
        upstream=(
            Upstream("bdl_player_boxscores", lookback_days=PLAYER_LOOKBACK),
            Upstream("nbac_gamebook_player_stats", lookback_days=PLAYER_LOOKBACK),
            Upstream("nbac_schedule"),
        ),
        row_key=("player_id",),
        deadline=PHASE4_DEADLINE,
        rows=RowExpectation(min_per_game=24, max_per_game=2 * MAX_ROSTER),
    ),
    Table(
        name="player_composite_factors",
        dataset="nba_precompute",
        phase=4,
        phase4_order=4,
        partition_column="analysis_date",
        description=(
            "Per player scheduled on the date: matchup factor (shot profile x opponent zone"
            " defense), fatigue and form trend combined into one adjustment."
        ),
        columns=_cols(
            "analysis_date DATE, player_id INT, team_abbr STRING, opponent_abbr STRING,"
            " game_id STRING, matchup_factor FLOAT, fatigue_factor FLOAT, form_trend FLOAT,"
            " composite_adjustment FLOAT"
        ),
        cluster_by=("player_id",),
        upstream=(
            Upstream("team_defense_zone_analysis"),
            Upstream("player_shot_zone_analysis"),
            Upstream("player_daily_cache"),
        ),
        row_key=("player_id",),
        deadline=PHASE4_DEADLINE,
        rows=RowExpectation(min_per_game=24, max_per_game=2 * MAX_ROSTER),
    ),
    Table(
        name="ml_feature_store_v2",
        dataset="nba_predictions",
        phase=4,
        phase4_order=5,
        partition_column="game_date",
        description=(
            "Per player scheduled on the date: the feature vector the prediction model reads"
            " before tip-off, including the game's consensus spread and total."
        ),
        columns=_cols(
            "game_date DATE, player_id INT, player_name STRING, game_id STRING,"
            " team_abbr STRING, opponent_abbr STRING, is_home BOOL, points_avg_last_5 FLOAT,"
            " points_avg_last_10 FLOAT, minutes_avg_last_5 FLOAT, minutes_avg_last_10 FLOAT,"
            " paint_share FLOAT, three_share FLOAT, opp_paint_defense_rating FLOAT,"
            " opp_three_defense_rating FLOAT, matchup_factor FLOAT, fatigue_factor FLOAT,"
            " composite_adjustment FLOAT, days_rest INT, is_back_to_back BOOL,"
            " team_spread FLOAT, game_total FLOAT, team_moneyline INT, bookmakers INT,"
            " feature_version STRING"
        ),
        cluster_by=("player_id",),
        upstream=(
            Upstream("team_defense_zone_analysis"),
            Upstream("player_shot_zone_analysis"),
            Upstream("player_daily_cache"),
            Upstream("player_composite_factors"),
            Upstream("odds_api_game_lines"),
        ),
        row_key=("player_id",),
        deadline=PHASE4_DEADLINE,
        rows=RowExpectation(min_per_game=24, max_per_game=2 * MAX_ROSTER),
    ),
)

BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
BY_KEY: dict[str, Table] = {t.key: t for t in TABLES}
SCHEDULE: Table = next(t for t in TABLES if t.phase == 2 and not t.upstream)
PHASE_GROUPS: dict[int, str] = {2: "phase2", 4: "phase4"}
# Who answers for a phase's tables: the assets' owners in the UI, and named in the alerts
# that need a person (a failed heal, a given-up target).
PHASE_OWNERS: dict[int, str] = {2: "team:data-ingestion", 4: "team:analytics-engineering"}


def reads_text(table: Table) -> list[str]:
    """What a table's processor reads, one line per input: ``nba_raw/x, D−30…D−1``."""
    return [
        f"{BY_NAME[u.table].key}, " + (f"D−{u.lookback_days}…D−1" if u.is_lookback else "D")
        for u in table.upstream
    ]


class UnknownTableError(ValueError):
    pass


def table_name(key: str) -> str:
    """A table's name from its asset key (``phase2_raw/bdl_player_boxscores`` -> the last part)."""
    return key.rsplit("/", 1)[-1]


def lookup(name: str) -> Table:
    """Resolve a short name (``bdl_player_boxscores``) or an asset key (``nba_raw/...``)."""
    table = BY_NAME.get(name) or BY_KEY.get(name.replace(".", "/"))
    if table is None:
        known = ", ".join(sorted(BY_NAME))
        raise UnknownTableError(f"unknown table '{name}': expected one of {known}")
    return table


def in_phase(phase: int | None) -> list[Table]:
    return [t for t in TABLES if phase is None or t.phase == phase]


def downstream_of(name: str) -> list[Table]:
    """Tables that read ``name`` directly (any date offset)."""
    return [t for t in TABLES if any(u.table == name for u in t.upstream)]


def read_same_date(table: Table) -> bool:
    """Some table reads ``table``'s partition of its own date: in a run of one date, the
    reader runs after it and must not read a short partition."""
    return any(u.table == table.name and not u.is_lookback for t in TABLES for u in t.upstream)


def execution_order(tables: list[Table] | None = None) -> list[Table]:
    """Registry tables in dependency order (Phase 2 before Phase 4, fixed processor order)."""
    chosen = {t.name for t in (tables if tables is not None else TABLES)}
    ordered: list[Table] = []
    seen: set[str] = set()

    def visit(t: Table) -> None:
        if t.name in seen:
            return
        seen.add(t.name)
        for u in t.upstream:
            visit(BY_NAME[u.table])
        if t.name in chosen:
            ordered.append(t)

    for t in sorted(TABLES, key=lambda t: (t.phase, t.phase4_order or 0)):
        visit(t)
    return ordered

"""The simulated league: the local Phase 1 source.

Thirty real teams with 15-man rosters play a season shaped like the real NBA one (late October
to mid April, 82 games a team, 1,230 games, no games on Thanksgiving, Christmas Eve or during
the All-Star break). Everything is a pure function of (seed, date): the same seed always
delivers the same rows, so tests and the demo are reproducible.

A (feed, date) listed as an outage raises :class:`SourceOutage` every time it is fetched; a
short delivery returns only a fraction of the rows. Both rehearse what real scrapers do.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache

from selfheal_dagster.core.calendar import (
    game_days,
    season_of,
)
from selfheal_dagster.core.dates import EASTERN, parse_date


class SourceOutage(RuntimeError):
    """The Phase 1 source could not deliver a feed for a date."""


@dataclass(frozen=True)
class Team:
    abbr: str
    city: str
    name: str
    conference: str
    division: str
    arena: str


TEAMS: tuple[Team, ...] = tuple(
    Team(*row)
    for row in (
        ("BOS", "Boston", "Celtics", "East", "Atlantic", "TD Garden"),
        ("BKN", "Brooklyn", "Nets", "East", "Atlantic", "Barclays Center"),
        ("NYK", "New York", "Knicks", "East", "Atlantic", "Madison Square Garden"),
        ("PHI", "Philadelphia", "76ers", "East", "Atlantic", "Wells Fargo Center"),
        ("TOR", "Toronto", "Raptors", "East", "Atlantic", "Scotiabank Arena"),
        ("CHI", "Chicago", "Bulls", "East", "Central", "United Center"),
        ("CLE", "Cleveland", "Cavaliers", "East", "Central", "Rocket Arena"),
        ("DET", "Detroit", "Pistons", "East", "Central", "Little Caesars Arena"),
        ("IND", "Indiana", "Pacers", "East", "Central", "Gainbridge Fieldhouse"),
        ("MIL", "Milwaukee", "Bucks", "East", "Central", "Fiserv Forum"),
        ("ATL", "Atlanta", "Hawks", "East", "Southeast", "State Farm Arena"),
        ("CHA", "Charlotte", "Hornets", "East", "Southeast", "Spectrum Center"),
        ("MIA", "Miami", "Heat", "East", "Southeast", "Kaseya Center"),
        ("ORL", "Orlando", "Magic", "East", "Southeast", "Kia Center"),
        ("WAS", "Washington", "Wizards", "East", "Southeast", "Capital One Arena"),
        ("DEN", "Denver", "Nuggets", "West", "Northwest", "Ball Arena"),
        ("MIN", "Minnesota", "Timberwolves", "West", "Northwest", "Target Center"),
        ("OKC", "Oklahoma City", "Thunder", "West", "Northwest", "Paycom Center"),
        ("POR", "Portland", "Trail Blazers", "West", "Northwest", "Moda Center"),
        ("UTA", "Utah", "Jazz", "West", "Northwest", "Delta Center"),
        ("GSW", "Golden State", "Warriors", "West", "Pacific", "Chase Center"),
        ("LAC", "LA", "Clippers", "West", "Pacific", "Intuit Dome"),
        ("LAL", "Los Angeles", "Lakers", "West", "Pacific", "Crypto.com Arena"),
        ("PHX", "Phoenix", "Suns", "West", "Pacific", "Footprint Center"),
        ("SAC", "Sacramento", "Kings", "West", "Pacific", "Golden 1 Center"),
        ("DAL", "Dallas", "Mavericks", "West", "Southwest", "American Airlines Center"),
        ("HOU", "Houston", "Rockets", "West", "Southwest", "Toyota Center"),
        ("MEM", "Memphis", "Grizzlies", "West", "Southwest", "FedExForum"),
        ("NOP", "New Orleans", "Pelicans", "West", "Southwest", "Smoothie King Center"),
        ("SAS", "San Antonio", "Spurs", "West", "Southwest", "Frost Bank Center"),
    )
)
TEAM_BY_ABBR = {t.abbr: t for t in TEAMS}
ROSTER_SIZE = 15
GAMES_PER_TEAM = 82
BOOKMAKERS = ("draftkings", "fanduel", "betmgm", "caesars", "espnbet")
ZONES = ("paint", "mid", "three")
_ZONE_BASE_PCT = {"paint": 0.60, "mid": 0.42, "three": 0.36}
# Minutes a rotation slot plays on an average night (slots 11-14 only see garbage time).
_SLOT_MINUTES = (34, 33, 31, 30, 28, 24, 21, 18, 15, 10, 6, 0, 0, 0, 0)
_FIRST = [
    "Jalen",
    "Marcus",
    "Tyrese",
    "Darius",
    "Malik",
    "Jaylen",
    "Devin",
    "Anthony",
    "Cameron",
    "Keegan",
    "Isaiah",
    "Trey",
    "Jordan",
    "Miles",
    "Brandon",
    "Caleb",
    "Donovan",
    "Zion",
    "Luka",
    "Nikola",
    "Victor",
    "Amen",
    "Scottie",
    "Paolo",
    "Evan",
    "Franz",
    "Jabari",
    "Chet",
    "Walker",
    "Dereck",
    "Bennedict",
    "Josh",
    "Andrew",
    "Gradey",
    "Kel'el",
    "Cason",
    "Ausar",
    "Jared",
    "Dalton",
    "Tari",
]
_LAST = [
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Morgan",
    "Cooper",
    "Peterson",
    "Reed",
    "Bailey",
    "Bell",
    "Howard",
    "Ward",
    "Cox",
    "Richardson",
    "Wood",
    "Watson",
    "Brooks",
    "Bennett",
    "Gray",
    "Hughes",
    "Price",
    "Sanders",
]


# --- the season's games -----------------------------------------------------------------------


@dataclass(frozen=True)
class Game:
    game_id: str
    game_date: date
    home: str
    away: str
    tipoff_utc: datetime
    national_tv: bool


def _matchups(rng: random.Random) -> list[tuple[str, str]]:
    """All 1,230 (home, away) games: 4 vs division, 3-4 vs conference, 2 vs the other conference.

    Within a conference each team meets 4 cross-division rivals only 3 times (2 home for two of
    them, 1 home for the other two), which yields exactly 82 games and 41 home games a team.
    """
    games: list[tuple[str, str]] = []
    divisions: dict[str, list[str]] = {}
    for t in TEAMS:
        divisions.setdefault(t.division, []).append(t.abbr)
    by_conf: dict[str, list[str]] = {}
    for t in TEAMS:
        if t.division not in by_conf.setdefault(t.conference, []):
            by_conf[t.conference].append(t.division)

    for i, a in enumerate(TEAMS):
        for b in TEAMS[i + 1 :]:
            if a.conference != b.conference:
                games += [(a.abbr, b.abbr), (b.abbr, a.abbr)]
            elif a.division == b.division:
                games += [(a.abbr, b.abbr), (b.abbr, a.abbr)] * 2
            else:
                divs = by_conf[a.conference]
                da, db = divs.index(a.division), divs.index(b.division)
                ia, ib = divisions[a.division].index(a.abbr), divisions[b.division].index(b.abbr)
                (lo, ilo, x), (hi, ihi, y) = sorted([(da, ia, a.abbr), (db, ib, b.abbr)])
                offset = (ihi - ilo) % 5
                if offset > 1:
                    games += [(x, y), (y, x)] * 2
                else:
                    extra_home = x if offset == 0 else y
                    other = y if extra_home == x else x
                    games += [(extra_home, other), (other, extra_home), (extra_home, other)]
    rng.shuffle(games)
    return games


_WEEKDAY_WEIGHT = (0.85, 1.0, 1.25, 0.75, 1.2, 1.1, 0.9)  # Mon..Sun


@cache
def season_games(seed: int, year: int) -> tuple[Game, ...]:
    """Place the season's 1,230 games on its game days.

    Greedy by urgency: each day takes a weekday-weighted share of the games left, and the teams
    with the most games left per day left play first. No team plays twice a day or three days
    in a row.
    """
    rng = random.Random(f"{seed}:schedule:{year}")
    days = game_days(year)
    season = _Placing(rng)
    weights = [_WEEKDAY_WEIGHT[d.weekday()] * rng.uniform(0.85, 1.15) for d in days]
    for i, day in enumerate(days):
        share = (sum(season.left.values()) // 2) * weights[i] / sum(weights[i:])
        target = 2 if i == 0 else (5 if (day.month, day.day) == (12, 25) else round(share))
        season.fill(day, max(1, min(15, target)), days_left=len(days) - i)
    pool = season.pool
    leftovers = [g for t in pool for games in pool[t].values() for g in games if g[0] == t]
    for home, away in leftovers:
        played = season.played
        day = next(d for d in reversed(days) if d not in played[home] and d not in played[away])
        season.take(day, home, away)
    return _tipoffs(sorted(season.placed, key=lambda p: (p[0], p[1])), rng, year)


class _Placing:
    """The schedule as it is placed: matchups left per team pair, games left per team, the
    dates each team played, and the games placed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool: dict[str, dict[str, list[tuple[str, str]]]] = {t.abbr: {} for t in TEAMS}
        for home, away in _matchups(rng):
            self.pool[home].setdefault(away, []).append((home, away))
            self.pool[away].setdefault(home, []).append((home, away))
        self.left = {t.abbr: GAMES_PER_TEAM for t in TEAMS}
        self.played: dict[str, list[date]] = {t.abbr: [] for t in TEAMS}
        self.placed: list[tuple[date, str, str]] = []

    def take(self, day: date, home: str, away: str) -> None:
        self.pool[home][away].remove((home, away))
        self.pool[away][home].remove((home, away))
        for t in (home, away):
            self.left[t] -= 1
            self.played[t].append(day)
        self.placed.append((day, home, away))

    def fill(self, day: date, target: int, days_left: int) -> None:
        """Up to ``target`` games on ``day``, the most urgent teams first."""
        rng, left, played, pool = self.rng, self.left, self.played, self.pool
        busy: set[str] = set()
        tired = {
            t
            for t, ds in played.items()
            if len(ds) >= 2 and ds[-1] == day - timedelta(1) and ds[-2] == day - timedelta(2)
        }
        yesterday = day - timedelta(1)

        def urgency(t: str) -> tuple[float, float]:
            rested = 0.6 if played[t] and played[t][-1] == yesterday else 1.0
            return (rested * left[t] / days_left, rng.random())

        count = 0
        while count < target:
            free = [t for t in left if left[t] > 0 and t not in busy and t not in tired]
            free.sort(key=urgency, reverse=True)
            chosen = None
            for team in free:
                options = [o for o, g in pool[team].items() if g and o in free and o != team]
                if options:
                    opp = max(options, key=urgency)
                    chosen = rng.choice(pool[team][opp])
                    break
            if chosen is None:
                break
            self.take(day, *chosen)
            busy.update(chosen)
            count += 1


def _tipoffs(
    placed: list[tuple[date, str, str]], rng: random.Random, year: int
) -> tuple[Game, ...]:
    """The placed games, numbered in date order, each with a tip-off time and TV flag."""
    games: list[Game] = []
    for n, (day, home, away) in enumerate(placed, start=1):
        hour, minute = rng.choice(((19, 0), (19, 30), (20, 0), (20, 30), (22, 0)))
        tip = datetime.combine(day, time(hour, minute), tzinfo=EASTERN).astimezone(UTC)
        games.append(
            Game(
                game_id=f"002{year % 100:02d}{n:05d}",
                game_date=day,
                home=home,
                away=away,
                tipoff_utc=tip,
                national_tv=rng.random() < 0.15,
            )
        )
    return tuple(games)


# --- players and teams ------------------------------------------------------------------------


@dataclass(frozen=True)
class Player:
    player_id: int
    name: str
    team: str
    slot: int
    shot_rate: float
    zone_share: Mapping[str, float]
    zone_skill: Mapping[str, float]
    ft_rate: float
    ft_pct: float
    reb_rate: float
    ast_rate: float


@dataclass(frozen=True)
class TeamProfile:
    rating: float
    zone_defense: Mapping[str, float] = field(default_factory=dict)


@cache
def rosters(seed: int) -> dict[str, tuple[Player, ...]]:
    rng = random.Random(f"{seed}:rosters")
    names = {(f, last) for f in _FIRST for last in _LAST}
    pool = sorted(names)
    rng.shuffle(pool)
    out: dict[str, tuple[Player, ...]] = {}
    for ti, team in enumerate(TEAMS):
        players = []
        for slot in range(ROSTER_SIZE):
            first, last = pool[ti * ROSTER_SIZE + slot]
            three = rng.uniform(0.2, 0.55)
            mid = rng.uniform(0.08, 0.25)
            players.append(
                Player(
                    player_id=1_630_000 + ti * 100 + slot,
                    name=f"{first} {last}",
                    team=team.abbr,
                    slot=slot,
                    shot_rate=max(0.2, 0.44 - slot * 0.018 + rng.gauss(0, 0.04)),
                    zone_share={"paint": 1 - three - mid, "mid": mid, "three": three},
                    zone_skill={z: rng.uniform(0.9, 1.1) for z in ZONES},
                    ft_rate=rng.uniform(0.15, 0.35),
                    ft_pct=rng.uniform(0.65, 0.9),
                    reb_rate=rng.uniform(0.1, 0.32),
                    ast_rate=rng.uniform(0.05, 0.25),
                )
            )
        out[team.abbr] = tuple(players)
    return out


@cache
def team_profiles(seed: int, year: int) -> dict[str, TeamProfile]:
    rng = random.Random(f"{seed}:teams:{year}")
    return {
        t.abbr: TeamProfile(
            rating=rng.gauss(0, 4),
            zone_defense={z: rng.uniform(0.92, 1.08) for z in ZONES},
        )
        for t in TEAMS
    }


# --- one game's truth, from which every feed is a view ------------------------------------------


@dataclass(frozen=True)
class PlayerLine:
    player: Player
    status: str  # active | dnp | inactive
    dnp_reason: str | None
    starter: bool
    minutes: float
    shots: Mapping[str, tuple[int, int]]  # zone -> (made, attempted)
    ftm: int
    fta: int
    rebounds: int
    assists: int
    steals: int
    blocks: int
    turnovers: int

    @property
    def points(self) -> int:
        return (
            2 * (self.shots["paint"][0] + self.shots["mid"][0]) + 3 * self.shots["three"][0]
        ) + self.ftm


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _count(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, math.sqrt(max(mean, 0.01)))))


def _team_lines(
    rng: random.Random, players: tuple[Player, ...], opp: TeamProfile, overtime: bool
) -> list[PlayerLine]:
    statuses: list[tuple[str, str | None]] = []
    for p in players:
        roll = rng.random()
        if roll < 0.05:
            statuses.append(("inactive", "Injury/Illness"))
        elif roll < 0.065:
            statuses.append(("inactive", "G League - On Assignment"))
        elif _SLOT_MINUTES[p.slot] == 0 and rng.random() < 0.65:
            statuses.append(("dnp", "Coach's Decision"))
        else:
            statuses.append(("active", None))
    playing = [p for p, (s, _) in zip(players, statuses, strict=True) if s == "active"]
    bases = [_SLOT_MINUTES[i] if _SLOT_MINUTES[i] else 3 for i in range(len(playing))]
    raw = [max(1.0, b * rng.gauss(1.0, 0.12)) for b in bases]
    total = 265.0 if overtime else 240.0
    minutes = {
        p.player_id: round(m * total / sum(raw), 1) for p, m in zip(playing, raw, strict=True)
    }
    starters = {p.player_id for p in playing[:5]}

    lines = []
    for p, (status, reason) in zip(players, statuses, strict=True):
        mins = minutes.get(p.player_id, 0.0)
        fga = _count(rng, mins * p.shot_rate) if mins else 0
        shots = dict.fromkeys(ZONES, (0, 0))
        for _ in range(fga):
            zone = rng.choices(ZONES, weights=[p.zone_share[z] for z in ZONES])[0]
            pct = _ZONE_BASE_PCT[zone] * p.zone_skill[zone] * opp.zone_defense[zone]
            made, att = shots[zone]
            shots[zone] = (made + (rng.random() < pct), att + 1)
        fta = _count(rng, fga * p.ft_rate) if mins else 0
        lines.append(
            PlayerLine(
                player=p,
                status=status,
                dnp_reason=reason,
                starter=p.player_id in starters,
                minutes=mins,
                shots=shots,
                ftm=_binomial(rng, fta, p.ft_pct),
                fta=fta,
                rebounds=_count(rng, mins * p.reb_rate),
                assists=_count(rng, mins * p.ast_rate),
                steals=_count(rng, mins * 0.03),
                blocks=_count(rng, mins * 0.02),
                turnovers=_count(rng, mins * 0.05),
            )
        )
    return lines


# --- the source ---------------------------------------------------------------------------------


def parse_outages(text: str) -> frozenset[tuple[str, date]]:
    """Parse ``SELFHEAL_LEAGUE_OUTAGES``: a comma list of ``table@YYYY-MM-DD``."""
    out = set()
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        table, sep, day = item.partition("@")
        if not sep or not table:
            raise ValueError(f"invalid outage '{item}': expected table@YYYY-MM-DD")
        out.add((table.split("/")[-1], parse_date(day, what=f"outage date in '{item}'")))
    return frozenset(out)


def _parse_valued(
    text: str, accept: Callable[[float], bool], what: str, example: str
) -> dict[tuple[str, date], float]:
    """A comma list of ``table@YYYY-MM-DD:VALUE``, each value checked by ``accept``."""
    out = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        target, sep, raw = item.rpartition(":")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not accept(value):
            raise ValueError(f"invalid {what} '{item}': expected table@YYYY-MM-DD:{example}")
        [(table, day)] = parse_outages(target)
        out[(table, day)] = value
    return out


def parse_short(text: str) -> dict[tuple[str, date], float]:
    """Parse ``SELFHEAL_LEAGUE_SHORT``: a comma list of ``table@YYYY-MM-DD:FRACTION``."""
    return _parse_valued(text, lambda v: 0 <= v < 1, "short delivery", "0.6")


def parse_slow(text: str) -> dict[tuple[str, date], float]:
    """Parse ``SELFHEAL_LEAGUE_SLOW``: a comma list of ``table@YYYY-MM-DD:SECONDS`` the source
    takes to deliver (a hanging scraper, for rehearsing a run killed mid-flight)."""
    return _parse_valued(text, lambda v: 0 <= v <= 3600, "slow delivery", "120")


class League:
    """The simulated Phase 1 source: ``feed(name, date)`` returns that feed's rows for the date."""

    def __init__(
        self,
        seed: int,
        outages: Iterable[tuple[str, date]] = (),
        short: Mapping[tuple[str, date], float] | None = None,
        slow: Mapping[tuple[str, date], float] | None = None,
    ) -> None:
        self.seed = seed
        self.outages = frozenset(outages)
        self.short = dict(short or {})
        self.slow = dict(slow or {})
        self._feeds: dict[str, Callable[[date], list[dict]]] = {
            "nbac_schedule": self.schedule_rows,
            "bdl_player_boxscores": self.boxscore_rows,
            "nbac_gamebook_player_stats": self.gamebook_rows,
            "odds_api_game_lines": self.odds_rows,
        }

    @property
    def feeds(self) -> list[str]:
        return list(self._feeds)

    def feed(self, name: str, day: date) -> list[dict]:
        if (name, day) in self.outages:
            raise SourceOutage(f"simulated outage: feed {name} for {day} is unavailable")
        if name not in self._feeds:
            raise KeyError(f"the simulated league has no feed '{name}'")
        if (name, day) in self.slow:
            import time

            time.sleep(self.slow[(name, day)])
        rows = self._feeds[name](day)
        fraction = self.short.get((name, day))
        return rows[: int(len(rows) * fraction)] if fraction is not None else rows

    def games_on(self, day: date) -> list[Game]:
        return _games_by_date(self.seed, season_of(day)).get(day, [])

    def schedule_rows(self, day: date) -> list[dict]:
        return [
            {
                "game_date": day,
                "game_id": g.game_id,
                "season": season_of(day),
                "home_team": g.home,
                "away_team": g.away,
                "tipoff_at": g.tipoff_utc.replace(tzinfo=None),
                "arena": TEAM_BY_ABBR[g.home].arena,
                "national_tv": g.national_tv,
            }
            for g in self.games_on(day)
        ]

    def boxscore_rows(self, day: date) -> list[dict]:
        rows = []
        for game, team, opp, home, line in self._lines(day):
            if line.status != "active" or line.minutes <= 0:
                continue
            made = {z: line.shots[z][0] for z in ZONES}
            att = {z: line.shots[z][1] for z in ZONES}
            rows.append(
                {
                    **_who(day, game, team, opp, home, line),
                    "starter": line.starter,
                    "minutes": line.minutes,
                    "points": line.points,
                    "fgm": sum(made.values()),
                    "fga": sum(att.values()),
                    "paint_fgm": made["paint"],
                    "paint_fga": att["paint"],
                    "mid_fgm": made["mid"],
                    "mid_fga": att["mid"],
                    "three_pm": made["three"],
                    "three_pa": att["three"],
                    "ftm": line.ftm,
                    "fta": line.fta,
                    "rebounds": line.rebounds,
                    "assists": line.assists,
                    "steals": line.steals,
                    "blocks": line.blocks,
                    "turnovers": line.turnovers,
                }
            )
        return rows

    def gamebook_rows(self, day: date) -> list[dict]:
        return [
            {
                **_who(day, game, team, opp, home, line),
                "status": line.status,
                "dnp_reason": line.dnp_reason,
                "minutes": line.minutes,
                "points": line.points,
            }
            for game, team, opp, home, line in self._lines(day)
        ]

    def odds_rows(self, day: date) -> list[dict]:
        rows = []
        profiles = team_profiles(self.seed, season_of(day))
        for game in self.games_on(day):
            rng = random.Random(f"{self.seed}:odds:{game.game_id}")
            edge = profiles[game.home].rating - profiles[game.away].rating + 2.5
            spread = round((-edge + rng.gauss(0, 1.5)) * 2) / 2
            total = round(rng.gauss(226, 6) * 2) / 2
            snapshot = (game.tipoff_utc - timedelta(hours=2)).replace(tzinfo=None)
            for book in BOOKMAKERS:
                s = spread + rng.choice((-0.5, 0, 0, 0.5))
                t = total + rng.choice((-0.5, 0, 0, 0.5))
                p_home = 1 / (1 + 10 ** (s / 15))
                lines = [
                    ("h2h", game.home, _american(p_home), None),
                    ("h2h", game.away, _american(1 - p_home), None),
                    ("spreads", game.home, rng.choice((-105, -110, -110, -115)), s),
                    ("spreads", game.away, rng.choice((-105, -110, -110, -115)), -s),
                    ("totals", "Over", rng.choice((-105, -110, -110, -115)), t),
                    ("totals", "Under", rng.choice((-105, -110, -110, -115)), t),
                ]
                rows += [
                    {
                        "game_date": day,
                        "game_id": game.game_id,
                        "home_team": game.home,
                        "away_team": game.away,
                        "bookmaker": book,
                        "market": market,
                        "outcome": outcome,
                        "price": price,
                        "point": point,
                        "snapshot_at": snapshot,
                    }
                    for market, outcome, price, point in lines
                ]
        return rows

    def _lines(self, day: date) -> Iterable[tuple[Game, str, str, bool, PlayerLine]]:
        for game in self.games_on(day):
            home_lines, away_lines = _game_lines(self.seed, game)
            for line in home_lines:
                yield game, game.home, game.away, True, line
            for line in away_lines:
                yield game, game.away, game.home, False, line


def _who(day: date, game: Game, team: str, opp: str, home: bool, line: PlayerLine) -> dict:
    """The columns that say whose line it is, shared by box scores and gamebooks."""
    return {
        "game_date": day,
        "game_id": game.game_id,
        "player_id": line.player.player_id,
        "player_name": line.player.name,
        "team_abbr": team,
        "opponent_abbr": opp,
        "is_home": home,
    }


def _american(p: float, vig: float = 1.0225) -> int:
    p = min(0.97, p * vig)
    return -round(100 * p / (1 - p)) if p >= 0.5 else round(100 * (1 - p) / p)


@cache
def _games_by_date(seed: int, year: int) -> dict[date, list[Game]]:
    out: dict[date, list[Game]] = {}
    for g in season_games(seed, year):
        out.setdefault(g.game_date, []).append(g)
    return out


@lru_cache(maxsize=256)
def _game_lines(seed: int, game: Game) -> tuple[list[PlayerLine], list[PlayerLine]]:
    rng = random.Random(f"{seed}:game:{game.game_id}")
    profiles = team_profiles(seed, season_of(game.game_date))
    roster = rosters(seed)
    overtime = rng.random() < 0.06
    home = _team_lines(rng, roster[game.home], profiles[game.away], overtime)
    away = _team_lines(rng, roster[game.away], profiles[game.home], overtime)
    return home, away
